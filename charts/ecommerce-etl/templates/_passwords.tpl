{{/*
Generated passwords. The chart never renders them: a pre-install/pre-upgrade hook Job creates
each Secret the values do not bring (existingSecret), only when it is absent, and adds a key
only when it is missing. So `helm template` (Argo CD, Flux's post-renderers, CI diffs) renders
the same objects every time, and no generated password sits in any rendered manifest.
*/}}

{{- define "ecommerce-etl.pgadminSecretName" -}}
{{- default (include "ecommerce-etl.componentName" (dict "ctx" . "component" "pgadmin")) .Values.pgadmin.existingSecret -}}
{{- end -}}

{{/* What the hook ensures, as JSON: [{name, keys: {key: {length} | {template, urlquote}}}]. */}}
{{- define "ecommerce-etl.generatedSecrets" -}}
{{- $out := list -}}
{{- $pg := .Values.postgresql -}}
{{- if and $pg.enabled (not $pg.auth.existingSecret) -}}
{{- $url := printf "postgresql+asyncpg://%s:{prefect-password}@%s:5432/%s" $pg.auth.prefect.username (include "ecommerce-etl.postgresqlName" .) $pg.auth.prefect.database -}}
{{- $out = append $out (dict "name" (include "ecommerce-etl.dbSecretName" .) "keys" (dict
      "postgres-password" (dict "length" 32)
      "prefect-password" (dict "length" 32)
      "etl-password" (dict "length" 32)
      "prefect-connection-url" (dict "template" $url "urlquote" true))) -}}
{{- end -}}
{{- if and .Values.pgadmin.enabled (not .Values.pgadmin.existingSecret) -}}
{{- $out = append $out (dict "name" (include "ecommerce-etl.pgadminSecretName" .) "keys" (dict "pgadmin-password" (dict "length" 32))) -}}
{{- end -}}
{{- $auth := .Values.prefectServer.basicAuth -}}
{{- if and $auth.enabled (not $auth.existingSecret) -}}
{{- $out = append $out (dict "name" (include "ecommerce-etl.basicAuthSecretName" .) "keys" (dict
      "password" (dict "length" 32)
      "username" (dict "template" $auth.username)
      (include "ecommerce-etl.basicAuthKey" .) (dict "template" (printf "%s:{password}" $auth.username)))) -}}
{{- end -}}
{{- if and (include "ecommerce-etl.inReleaseRedis" .) (not .Values.prefectServer.redis.existingSecret) -}}
{{- $out = append $out (dict "name" (include "ecommerce-etl.redisName" .) "keys" (dict "redis-password" (dict "length" 32))) -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* The hook's program (the flow image's Python, standard library only). It talks to the
Kubernetes API with the pod's token; prints key names, never values. argv[1]: the JSON spec. */}}
{{- define "ecommerce-etl.ensureSecretsProgram" -}}
import base64, json, os, secrets, ssl, string, sys, urllib.error, urllib.parse, urllib.request

spec = json.loads(sys.argv[1])
sa = os.environ.get("SERVICE_ACCOUNT_DIR", "/var/run/secrets/kubernetes.io/serviceaccount")
api = os.environ.get("KUBERNETES_API_URL") or "https://%s:%s" % (
    os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"])
token = open(os.path.join(sa, "token")).read().strip()
tls = ssl.create_default_context(cafile=os.path.join(sa, "ca.crt")) if api.startswith("https") else None
base = "/api/v1/namespaces/%s/secrets" % spec["namespace"]
keep = spec["annotations"]  # never deleted by helm, never pruned by Argo CD or Flux: the data outlives releases


def call(method, path, body=None, content_type="application/json"):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(api + path, data=data, method=method, headers={
        "Authorization": "Bearer " + token, "Content-Type": content_type, "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30, context=tls) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        if error.code == 404 and method == "GET":
            return None
        sys.exit("%s %s: HTTP %s %s" % (method, path, error.code, error.read()[:300].decode(errors="replace")))


def encode(values):
    return {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}


for wanted in spec["secrets"]:
    name, keys = wanted["name"], wanted["keys"]
    live = call("GET", "%s/%s" % (base, name))
    have = {k: base64.b64decode(v).decode() for k, v in ((live or {}).get("data") or {}).items()}
    new = {k: "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(how["length"]))
           for k, how in keys.items() if k not in have and "length" in how}
    known = {**have, **new}
    for k, how in keys.items():
        if k not in have and "template" in how:
            fields = {f: urllib.parse.quote(v, safe="") if how.get("urlquote") else v for f, v in known.items()}
            new[k] = how["template"].format(**fields)
    if live is None:
        call("POST", base, {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": encode(new),
                            "metadata": {"name": name, "labels": spec["labels"], "annotations": keep}})
        print("Secret %s: created with %s" % (name, ", ".join(sorted(new))))
    elif new or any((live["metadata"].get("annotations") or {}).get(k) != v for k, v in keep.items()):
        call("PATCH", "%s/%s" % (base, name), {"metadata": {"annotations": keep}, "data": encode(new)},
             "application/merge-patch+json")
        print("Secret %s: kept %s, added %s" % (name, ", ".join(sorted(have)) or "nothing", ", ".join(sorted(new)) or "nothing"))
    else:
        print("Secret %s: kept %s" % (name, ", ".join(sorted(have))))
{{- end -}}

/* The fast path's line rules compiled: one pass over a chunk's bytes, no copy, the GIL released so
 * that one segment's check runs beside the other segments' COPY.
 *
 * lines(buffer) -> int | None: the number of lines when PostgreSQL's COPY reads every line as the
 * careful path would (flows/load/SPEC.md, "What the paths must agree on"), else None. The rules and
 * their reasons are in flows/transform/fastcheck.py; tests/fastcheck_reference.py states them with
 * numpy, and tests/test_fastcheck_native.py proves both give the same answers on random bytes.
 *
 * How: 64 bytes at a time, one vector pass finds the separators (comma, LF) and any quote or CR; the
 * fields between separators are then checked a word (8 bytes) at a time. Every read stays inside the
 * buffer: words near its end are assembled from the bytes that are there.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the word checks assume a little-endian machine"
#endif

#define MAX_LINE_BYTES 65536 /* flows.transform.fastcheck.MAX_FAST_LINE_BYTES */
#define MAX_NUMBER_CHARS 20  /* flows.transform.fields.MAX_NUMBER_CHARS */
#define TIMESTAMP_CHARS 23   /* "YYYY-MM-DD HH:MM:SS UTC" */
#define UUID_CHARS 36
#define BLOCK 64

typedef const unsigned char *cursor;

/* --- words: 8 bytes, the first byte lowest --------------------------------------------------- */

#define ONES 0x0101010101010101ULL
#define HIGH 0x8080808080808080ULL
#define LOW7 0x7F7F7F7F7F7F7F7FULL
#define ZEROS (ONES * '0')

static inline uint64_t load_word(cursor p, cursor stop)
{
    uint64_t w = 0;
    if (stop - p >= 8)
        memcpy(&w, p, 8); /* one unaligned load */
    else
        memcpy(&w, p, (size_t)(stop - p));
    return w;
}

/* The low `n` bytes (1..8). */
static inline uint64_t low_bytes(Py_ssize_t n) { return n >= 8 ? ~0ULL : (1ULL << (8 * n)) - 1; }

/* Every byte of x (a word XORed with "0"s) is 0..9. A byte >= 0x8A can carry into the next, which
 * can only fail a word that already fails, never pass one. */
static inline int digits_only(uint64_t x) { return ((x | (x + ONES * 0x76)) & HIGH) == 0; }

/* 0xFF in every byte of y that is 0, else 0x00 (exact: no carries between bytes). */
static inline uint64_t zero_bytes(uint64_t y)
{
    uint64_t high = ~(((y & LOW7) + LOW7) | y | LOW7);
    return (high >> 7) * 0xFF;
}

/* --- fields ------------------------------------------------------------------------------------ */

/* The timestamp's three words: the literal bytes (mask, value); every other byte is a digit. */
static uint64_t stamp_mask[3], stamp_value[3];

static void init_stamp_layout(void)
{
    static const char layout[] = "0000-00-00 00:00:00 UTC,";
    if (stamp_mask[0])
        return;
    for (int i = 0; i < 24; i++) {
        if (layout[i] == '0')
            continue;
        stamp_mask[i / 8] |= 0xFFULL << (8 * (i % 8));
        stamp_value[i / 8] |= (uint64_t)(unsigned char)layout[i] << (8 * (i % 8));
    }
}

/* "YYYY-MM-DD HH:MM:SS UTC," at s (its 24 bytes are in the buffer): the exact layout, hour <= 23 and
 * second <= 59. Day, month and minute ranges are left to COPY, which gives the careful path's reason. */
static inline int timestamp_ok(cursor s)
{
    uint64_t w[3];
    memcpy(w, s, sizeof w);
    for (int i = 0; i < 3; i++) {
        uint64_t digits = ((w[i] & ~stamp_mask[i]) | (ZEROS & stamp_mask[i])) ^ ZEROS;
        if ((w[i] & stamp_mask[i]) != stamp_value[i] || !digits_only(digits))
            return 0;
    }
    int hour = (s[11] - '0') * 10 + (s[12] - '0');
    int second = (s[17] - '0') * 10 + (s[18] - '0');
    return hour <= 23 && second <= 59;
}

static inline int is_digit(unsigned char c) { return (unsigned char)(c - '0') <= 9; }

/* [p, end): an optional '-', then digits (and '.' when `dots`), at most MAX_NUMBER_CHARS in all, the
 * first and last after the sign a digit. Other arrangements ("1.2.3") are COPY's to refuse. */
static inline int number_ok(cursor p, cursor end, cursor stop, int dots)
{
    Py_ssize_t length = end - p;
    if (length < 1 || length > MAX_NUMBER_CHARS)
        return 0;
    p += *p == '-';
    if (p == end || !is_digit(*p) || !is_digit(end[-1]))
        return 0;
    for (; p < end; p += 8) {
        uint64_t x = (load_word(p, stop) ^ ZEROS) & low_bytes(end - p);
        if (dots)
            x &= ~zero_bytes(x ^ (ONES * ('.' ^ '0')));
        if (!digits_only(x))
            return 0;
    }
    return 1;
}

/* --- separators: a 64-byte block at a time ------------------------------------------------------ */

typedef struct {
    cursor data, stop; /* the buffer */
    Py_ssize_t block;  /* offset of the current block (negative before the first) */
    uint64_t left;     /* its separators not yet taken, one bit per byte */
    int vector;        /* classify with SSE2 (else byte by byte: the portable path, also tested) */
    int failed;        /* a block held a quote, or a CR not followed by an LF */
} scanner;

/* One block's separators (comma or LF), quotes and CRs, one bit per byte; `n` <= 64 bytes at b. */
static void classify_bytes(cursor b, int n, uint64_t *seps, uint64_t *quotes, uint64_t *crs)
{
    uint64_t s = 0, q = 0, r = 0;
    for (int i = 0; i < n; i++) {
        s |= (uint64_t)(b[i] == ',' || b[i] == '\n') << i;
        q |= (uint64_t)(b[i] == '"') << i;
        r |= (uint64_t)(b[i] == '\r') << i;
    }
    *seps = s, *quotes = q, *crs = r;
}

#if defined(__SSE2__)
static inline uint64_t mask_of(__m128i v, char c) { return (uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(c))); }

static void classify_sse2(cursor b, uint64_t *seps, uint64_t *quotes, uint64_t *crs)
{
    __m128i v[4], rare = _mm_setzero_si128();
    uint64_t s = 0;
    for (int i = 0; i < 4; i++) {
        v[i] = _mm_loadu_si128((const __m128i *)(b + 16 * i));
        __m128i sep = _mm_or_si128(_mm_cmpeq_epi8(v[i], _mm_set1_epi8(',')), _mm_cmpeq_epi8(v[i], _mm_set1_epi8('\n')));
        s |= (uint64_t)(uint32_t)_mm_movemask_epi8(sep) << (16 * i);
        rare = _mm_or_si128(rare, _mm_or_si128(_mm_cmpeq_epi8(v[i], _mm_set1_epi8('"')), _mm_cmpeq_epi8(v[i], _mm_set1_epi8('\r'))));
    }
    *seps = s, *quotes = 0, *crs = 0;
    if (_mm_movemask_epi8(rare) == 0)
        return;
    for (int i = 0; i < 4; i++) {
        *quotes |= mask_of(v[i], '"') << (16 * i);
        *crs |= mask_of(v[i], '\r') << (16 * i);
    }
}
#endif

/* Classify the block at sc->block: 0 when it holds a quote, or a CR that is not followed by an LF. */
static int classify(scanner *sc)
{
    cursor b = sc->data + sc->block;
    Py_ssize_t n = sc->stop - b;
    uint64_t seps, quotes, crs;
    if (n < BLOCK) {
        classify_bytes(b, (int)n, &seps, &quotes, &crs);
    } else {
#if defined(__SSE2__)
        if (sc->vector)
            classify_sse2(b, &seps, &quotes, &crs);
        else
#endif
            classify_bytes(b, BLOCK, &seps, &quotes, &crs);
    }
    sc->left = seps;
    if (quotes)
        return 0;
    for (; crs; crs &= crs - 1) {
        Py_ssize_t after = __builtin_ctzll(crs) + 1;
        if (after >= n || b[after] != '\n')
            return 0;
    }
    return 1;
}

/* Classify the next blocks until one holds a separator: 1 when one does; 0 at the end of the buffer
 * or when a block fails its quote/CR rule (then `failed` is set). Kept out of line: it runs once per
 * block, the separator loop below once per field. */
static __attribute__((noinline)) int refill(scanner *sc)
{
    while (sc->left == 0) {
        if (sc->block + BLOCK >= sc->stop - sc->data)
            return 0;
        sc->block += BLOCK;
        if (!classify(sc)) {
            sc->failed = 1;
            return 0;
        }
    }
    return 1;
}

/* The next separator; sc->stop when there is none (the end of the buffer acts as one); NULL when a
 * block fails its quote/CR rule. */
static inline cursor next_separator(scanner *sc)
{
    if (__builtin_expect(sc->left == 0, 0) && !refill(sc))
        return sc->failed ? NULL : sc->stop;
    cursor at = sc->data + sc->block + __builtin_ctzll(sc->left);
    sc->left &= sc->left - 1;
    return at;
}

/* The next field's end: a comma (not the end of the buffer, not an LF); else NULL. */
static inline cursor comma(scanner *sc)
{
    cursor at = next_separator(sc);
    return at && at != sc->stop && *at == ',' ? at : NULL;
}

/* --- lines ------------------------------------------------------------------------------------- */

/* The line starting at s: nine fields in the dataset's order. Returns where the next line starts
 * (after the LF, or the buffer's end), or NULL. */
static inline cursor line(scanner *sc, cursor s)
{
    cursor stop = sc->stop, c, p;
    if ((c = comma(sc)) == NULL || c - s != TIMESTAMP_CHARS || !timestamp_ok(s)) /* event_time */
        return NULL;
    p = c + 1;
    if ((c = comma(sc)) == NULL || c == p) /* event_type: any text, not empty */
        return NULL;
    p = c + 1;
    if ((c = comma(sc)) == NULL || !number_ok(p, c, stop, 0)) /* product_id */
        return NULL;
    p = c + 1;
    if ((c = comma(sc)) == NULL || !number_ok(p, c, stop, 0)) /* category_id */
        return NULL;
    if ((c = comma(sc)) == NULL || (c = comma(sc)) == NULL) /* category_code, brand: any text */
        return NULL;
    p = c + 1;
    if ((c = comma(sc)) == NULL || !number_ok(p, c, stop, 1)) /* price */
        return NULL;
    p = c + 1;
    if ((c = comma(sc)) == NULL || !number_ok(p, c, stop, 0)) /* user_id */
        return NULL;
    p = c + 1;
    cursor end = next_separator(sc); /* user_session: up to the line's end (a ninth comma fails) */
    if (end == NULL || (end != stop && *end != '\n'))
        return NULL;
    cursor next = end == stop ? stop : end + 1;
    if (end != stop && end[-1] == '\r') /* a CRLF (a CR anywhere else failed its block) */
        end--;
    if (end - s > MAX_LINE_BYTES)
        return NULL;
    if (end == p)
        return next;
    if (end - p != UUID_CHARS || p[8] != '-' || p[13] != '-' || p[18] != '-' || p[23] != '-')
        return NULL;
    return next;
}

/* The number of lines of [data, data + size), or -1. Lines end with LF; the last may lack it. */
static Py_ssize_t check(cursor data, Py_ssize_t size, int vector)
{
    scanner sc = {.data = data, .stop = data + size, .block = -BLOCK, .left = 0, .vector = vector, .failed = 0};
    Py_ssize_t lines = 0;
    for (cursor s = data; s < sc.stop; lines++) {
        if ((s = line(&sc, s)) == NULL)
            return -1;
    }
    return lines;
}

/* --- line counting (the plan numbers the lines of each segment before any is loaded) ------------ */

static Py_ssize_t count_newlines(cursor p, Py_ssize_t n, int vector)
{
    Py_ssize_t count = 0, i = 0;
#if defined(__SSE2__)
    const __m128i lf = _mm_set1_epi8('\n');
    while (vector && n - i >= 16) {
        __m128i hits = _mm_setzero_si128(); /* per byte lane, at most 255 before it is summed */
        for (int k = 0; k < 255 && n - i >= 16; k++, i += 16)
            hits = _mm_sub_epi8(hits, _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(p + i)), lf));
        __m128i sums = _mm_sad_epu8(hits, _mm_setzero_si128());
        count += _mm_cvtsi128_si32(sums) + _mm_extract_epi16(sums, 4);
    }
#else
    (void)vector;
#endif
    for (; i < n; i++)
        count += p[i] == '\n';
    return count;
}

/* --- the module -------------------------------------------------------------------------------- */

typedef Py_ssize_t (*counter)(cursor, Py_ssize_t, int);

/* One buffer scanned without the GIL; a negative count (check(): not every line is COPY-safe) is None. */
static PyObject *scan(PyObject *arg, counter fn, int vector)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    Py_ssize_t found;
    Py_BEGIN_ALLOW_THREADS
    found = fn((cursor)view.buf, view.len, vector);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (found < 0)
        Py_RETURN_NONE;
    return PyLong_FromSsize_t(found);
}

static PyObject *count_lf(PyObject *module, PyObject *arg)
{
    (void)module;
    return scan(arg, count_newlines, 1);
}

static PyObject *count_lf_portable(PyObject *module, PyObject *arg)
{
    (void)module;
    return scan(arg, count_newlines, 0);
}

static PyObject *lines(PyObject *module, PyObject *arg)
{
    (void)module;
    return scan(arg, check, 1);
}

static PyObject *lines_portable(PyObject *module, PyObject *arg)
{
    (void)module;
    return scan(arg, check, 0);
}

static PyMethodDef methods[] = {
    {"lines", lines, METH_O,
     "lines(buffer) -> int | None: the number of lines when COPY reads every line as the careful path "
     "would, else None. Releases the GIL."},
    {"lines_portable", lines_portable, METH_O,
     "lines() without the vector instructions: the path of machines without SSE2 (for the tests)."},
    {"newlines", count_lf, METH_O, "newlines(buffer) -> int: how many LF bytes it holds. Releases the GIL."},
    {"newlines_portable", count_lf_portable, METH_O, "newlines() without the vector instructions (for the tests)."},
    {NULL, NULL, 0, NULL},
};

static int exec_module(PyObject *module)
{
    init_stamp_layout();
    if (PyModule_AddIntConstant(module, "MAX_LINE_BYTES", MAX_LINE_BYTES) < 0)
        return -1;
#if defined(__SSE2__)
    if (PyModule_AddIntConstant(module, "VECTOR", 1) < 0)
        return -1;
#else
    if (PyModule_AddIntConstant(module, "VECTOR", 0) < 0)
        return -1;
#endif
    return PyModule_AddIntConstant(module, "MAX_NUMBER_CHARS", MAX_NUMBER_CHARS);
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, exec_module},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "_fastcheck",
    .m_doc = "The fast path's byte-level check, compiled (see flows/transform/fastcheck.py).",
    .m_size = 0,
    .m_methods = methods,
    .m_slots = slots,
};

PyMODINIT_FUNC PyInit__fastcheck(void) { return PyModuleDef_Init(&module_def); }

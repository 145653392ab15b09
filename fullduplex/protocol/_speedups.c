/* Optional C speedups for the two per-byte loops of the protocol core:
 * payload masking (RFC 6455 §5.3) and incremental UTF-8 validation (RFC 3629,
 * RFC 6455 §8.1). Same semantics as the pure-Python references in mask.py and
 * utf8.py; the tests run both. Plain portable C99: word-at-a-time loops the
 * compiler can vectorize, no intrinsics.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

/* Inputs at least this large are processed without holding the GIL. */
#define GIL_RELEASE_THRESHOLD (64 * 1024)

#if defined(__GNUC__) || defined(__clang__)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define UNLIKELY(x) (x)
#endif

#if defined(_MSC_VER) && !defined(restrict)
#define restrict __restrict
#endif

/* ------------------------------------------------------------------------ */
/* Arguments                                                                */
/* ------------------------------------------------------------------------ */

/* Collect up to `nmax` arguments, given by position or by name, into `out`.
 * Vectorcall keeps the per-call cost low for the small payloads of the hot path. */
static int
parse_args(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
           const char *const *names, Py_ssize_t nmin, Py_ssize_t nmax, PyObject **out)
{
    Py_ssize_t i, j, nkw;

    for (i = 0; i < nmax; i++) {
        out[i] = NULL;
    }
    if (nargs > nmax) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %zd positional arguments (%zd given)",
                     fname, nmax, nargs);
        return -1;
    }
    for (i = 0; i < nargs; i++) {
        out[i] = args[i];
    }
    nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (i = 0; i < nkw; i++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, i);
        for (j = 0; j < nmax; j++) {
            if (PyUnicode_CompareWithASCIIString(key, names[j]) == 0) {
                break;
            }
        }
        if (j == nmax) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", fname,
                         key);
            return -1;
        }
        if (out[j] != NULL) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'", fname,
                         names[j]);
            return -1;
        }
        out[j] = args[nargs + i];
    }
    for (i = 0; i < nmin; i++) {
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fname, names[i]);
            return -1;
        }
    }
    return 0;
}

/* A read-only, C-contiguous byte view of any buffer-protocol object. */
typedef struct {
    const unsigned char *buf;
    Py_ssize_t len;
    Py_buffer view; /* valid when has_view */
    int has_view;
    void *copy; /* owned flat copy of a non-contiguous buffer, or NULL */
} input_t;

static int
input_get(PyObject *obj, input_t *in)
{
    in->has_view = 0;
    in->copy = NULL;
    if (PyBytes_CheckExact(obj)) { /* the common case: no buffer export needed */
        in->buf = (const unsigned char *)PyBytes_AS_STRING(obj);
        in->len = PyBytes_GET_SIZE(obj);
        return 0;
    }
    if (PyObject_GetBuffer(obj, &in->view, PyBUF_FULL_RO) < 0) {
        return -1;
    }
    in->has_view = 1;
    in->len = in->view.len;
    if (PyBuffer_IsContiguous(&in->view, 'C')) {
        in->buf = (const unsigned char *)in->view.buf;
        return 0;
    }
    /* A strided memoryview: flatten it once rather than walk strides in the loops. */
    in->copy = PyMem_Malloc(in->len > 0 ? (size_t)in->len : 1);
    if (in->copy == NULL) {
        PyBuffer_Release(&in->view);
        PyErr_NoMemory();
        return -1;
    }
    if (PyBuffer_ToContiguous(in->copy, &in->view, in->len, 'C') < 0) {
        PyMem_Free(in->copy);
        PyBuffer_Release(&in->view);
        return -1;
    }
    in->buf = (const unsigned char *)in->copy;
    return 0;
}

static void
input_release(input_t *in)
{
    if (in->copy != NULL) {
        PyMem_Free(in->copy);
    }
    if (in->has_view) {
        PyBuffer_Release(&in->view);
    }
}

static inline uint64_t
load64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v); /* unaligned-safe; compiles to a plain load */
    return v;
}

static inline void
store64(unsigned char *p, uint64_t v)
{
    memcpy(p, &v, sizeof v);
}

/* ------------------------------------------------------------------------ */
/* Masking, RFC 6455 §5.3                                                   */
/* ------------------------------------------------------------------------ */

/* dst[i] = src[i] ^ key[i % 4]. */
static void
xor_mask(unsigned char *restrict dst, const unsigned char *restrict src, Py_ssize_t n,
         const unsigned char key[4])
{
    unsigned char key8[8];
    uint64_t k64;
    Py_ssize_t i = 0;

    /* The key twice in memory order, so a 64-bit XOR is right on any endianness. */
    memcpy(key8, key, 4);
    memcpy(key8 + 4, key, 4);
    memcpy(&k64, key8, 8);

    for (; i + 32 <= n; i += 32) {
        store64(dst + i, load64(src + i) ^ k64);
        store64(dst + i + 8, load64(src + i + 8) ^ k64);
        store64(dst + i + 16, load64(src + i + 16) ^ k64);
        store64(dst + i + 24, load64(src + i + 24) ^ k64);
    }
    for (; i + 8 <= n; i += 8) {
        store64(dst + i, load64(src + i) ^ k64);
    }
    /* i is a multiple of 8 here, so key byte i % 4 lines up again. */
    for (; i < n; i++) {
        dst[i] = src[i] ^ key[i & 3];
    }
}

PyDoc_STRVAR(apply_mask_doc,
             "apply_mask(data, mask)\n--\n\n"
             "Return data XOR-ed with the 4-byte mask repeated (RFC 6455 section 5.3).");

static PyObject *
apply_mask(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"data", "mask"};
    PyObject *argv[2];
    input_t data, mask;
    PyObject *result;
    unsigned char key[4];

    (void)module;
    if (parse_args("apply_mask", args, nargs, kwnames, names, 2, 2, argv) < 0) {
        return NULL;
    }
    if (input_get(argv[1], &mask) < 0) {
        return NULL;
    }
    if (mask.len != 4) {
        PyErr_Format(PyExc_ValueError, "mask must be 4 bytes, got %zd", mask.len);
        input_release(&mask);
        return NULL;
    }
    memcpy(key, mask.buf, 4);
    input_release(&mask);

    if (input_get(argv[0], &data) < 0) {
        return NULL;
    }
    result = PyBytes_FromStringAndSize(NULL, data.len);
    if (result != NULL && data.len > 0) {
        unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
        if (data.len >= GIL_RELEASE_THRESHOLD) {
            /* The buffer export (or the caller's reference) keeps the input alive. */
            Py_BEGIN_ALLOW_THREADS
            xor_mask(out, data.buf, data.len, key);
            Py_END_ALLOW_THREADS
        }
        else {
            xor_mask(out, data.buf, data.len, key);
        }
    }
    input_release(&data);
    return result;
}

PyDoc_STRVAR(unmask_join_doc,
             "unmask_join(parts, mask)\n--\n\n"
             "Join a list of byte chunks and XOR them with the 4-byte mask in one pass:\n"
             "equal to apply_mask(b''.join(parts), mask) with a single allocation.");

static PyObject *
unmask_join(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    input_t mask;
    PyObject *parts, *result;
    Py_ssize_t count, i, total = 0, offset = 0;
    unsigned char key[4];

    (void)module;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "unmask_join() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    parts = args[0];
    if (!PyList_Check(parts)) {
        PyErr_SetString(PyExc_TypeError, "unmask_join() parts must be a list");
        return NULL;
    }
    if (input_get(args[1], &mask) < 0) {
        return NULL;
    }
    if (mask.len != 4) {
        PyErr_Format(PyExc_ValueError, "mask must be 4 bytes, got %zd", mask.len);
        input_release(&mask);
        return NULL;
    }
    memcpy(key, mask.buf, 4);
    input_release(&mask);

    /* The list is ours for the duration: nothing here runs Python code. */
    count = PyList_GET_SIZE(parts);
    for (i = 0; i < count; i++) {
        PyObject *item = PyList_GET_ITEM(parts, i);
        if (!PyBytes_Check(item)) {
            PyErr_SetString(PyExc_TypeError, "unmask_join() parts must be bytes");
            return NULL;
        }
        total += PyBytes_GET_SIZE(item);
    }
    result = PyBytes_FromStringAndSize(NULL, total);
    if (result == NULL) {
        return NULL;
    }
    for (i = 0; i < count; i++) {
        PyObject *item = PyList_GET_ITEM(parts, i);
        Py_ssize_t n = PyBytes_GET_SIZE(item);
        unsigned char rkey[4];
        int k = (int)(offset & 3), j;
        /* Byte `offset` of the payload uses key byte offset % 4 (RFC 6455 §5.3). */
        for (j = 0; j < 4; j++) {
            rkey[j] = key[(k + j) & 3];
        }
        xor_mask((unsigned char *)PyBytes_AS_STRING(result) + offset,
                 (const unsigned char *)PyBytes_AS_STRING(item), n, rkey);
        offset += n;
    }
    return result;
}

/* ------------------------------------------------------------------------ */
/* UTF-8 validation, RFC 3629 §4                                            */
/* ------------------------------------------------------------------------ */

/* Two cooperating validators with one meaning:
 *
 * - the automaton of utf8.py (same states, same public numbering: 0 accept,
 *   1..7 inside a sequence, -1 reject), written from the RFC 3629 grammar. It
 *   handles what the fast path leaves: a sequence left open by the previous
 *   piece, the last few bytes of a piece, and deciding on invalid input. Each
 *   byte has a 64-bit "row" built at import holding, at bit 6*s, the code
 *   6 * next-state for state s, so a step is `s = (row[byte] >> s) & 63`.
 * - a fast path (utf8_fast) for the common case, between characters with at
 *   least 8 bytes left: ASCII 8 or 32 bytes at a time, ASCII mixed with 2-byte
 *   sequences 8 bytes at a time, anything else one whole 2-, 3- or 4-byte
 *   sequence at a time, against the same RFC 3629 ranges. At the first byte it
 *   does not like it stops, and the automaton decides from there.
 */
enum { ACC, TAIL1, TAIL2, TAIL3, ST_E0, ST_ED, ST_F0, ST_F4, REJ, N_STATES };

/* Byte classes: 0 ascii, 1 80-8F, 2 90-9F, 3 A0-BF, 4 never valid (C0 C1 F5-FF),
 * 5 C2-DF, 6 E0, 7 E1-EC EE-EF, 8 ED, 9 F0, 10 F1-F3, 11 F4. */
#define N_CLASSES 12

static const unsigned char transitions[N_STATES][N_CLASSES] = {
    /*           ascii 80-8F  90-9F  A0-BF  bad  C2-DF  E0     E1..   ED     F0     F1-F3  F4 */
    /* ACC   */ {ACC,  REJ,   REJ,   REJ,   REJ, TAIL1, ST_E0, TAIL2, ST_ED, ST_F0, TAIL3, ST_F4},
    /* TAIL1 */ {REJ,  ACC,   ACC,   ACC,   REJ, REJ,   REJ,   REJ,   REJ,   REJ,   REJ,   REJ},
    /* TAIL2 */ {REJ,  TAIL1, TAIL1, TAIL1, REJ, REJ,   REJ,   REJ,   REJ,   REJ,   REJ,   REJ},
    /* TAIL3 */ {REJ,  TAIL2, TAIL2, TAIL2, REJ, REJ,   REJ,   REJ,   REJ,   REJ,   REJ,   REJ},
    /* E0    */ {REJ,  REJ,   REJ,   TAIL1, REJ, REJ,   REJ,   REJ,   REJ,   REJ,   REJ,   REJ},
    /* ED    */ {REJ,  TAIL1, TAIL1, REJ,   REJ, REJ,   REJ,   REJ,   REJ,   REJ,   REJ,   REJ},
    /* F0    */ {REJ,  REJ,   TAIL2, TAIL2, REJ, REJ,   REJ,   REJ,   REJ,   REJ,   REJ,   REJ},
    /* F4    */ {REJ,  TAIL2, REJ,   REJ,   REJ, REJ,   REJ,   REJ,   REJ,   REJ,   REJ,   REJ},
    /* REJ   */ {REJ,  REJ,   REJ,   REJ,   REJ, REJ,   REJ,   REJ,   REJ,   REJ,   REJ,   REJ},
};

static int
byte_class(unsigned int b)
{
    if (b < 0x80) return 0;
    if (b < 0x90) return 1;
    if (b < 0xA0) return 2;
    if (b < 0xC0) return 3;
    if (b == 0xC0 || b == 0xC1 || b >= 0xF5) return 4;
    if (b < 0xE0) return 5;
    if (b == 0xE0) return 6;
    if (b == 0xED) return 8;
    if (b < 0xF0) return 7;
    if (b == 0xF0) return 9;
    if (b < 0xF4) return 10;
    return 11;
}

#define SHIFT(state) (6u * (unsigned int)(state))
#define SHIFT_ACC SHIFT(ACC)
#define SHIFT_REJ SHIFT(REJ)

static uint64_t utf8_rows[256];

static void
build_utf8_rows(void)
{
    for (unsigned int b = 0; b < 256; b++) {
        uint64_t row = 0;
        int c = byte_class(b);
        for (unsigned int s = 0; s < N_STATES; s++) {
            row |= (uint64_t)SHIFT(transitions[s][c]) << SHIFT(s);
        }
        utf8_rows[b] = row;
    }
}

/* Allowed range of the second byte after a 3-byte lead E0..EF (index: lead & 0x0F)
 * and a 4-byte lead F0..F4 (index: lead & 0x07), RFC 3629 section 4: E0 and F0
 * exclude overlong forms, ED surrogates, F4 code points above U+10FFFF. */
static const unsigned char second_lo3[16] = {
    0xA0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80};
static const unsigned char second_hi3[16] = {
    0xBF, 0xBF, 0xBF, 0xBF, 0xBF, 0xBF, 0xBF, 0xBF,
    0xBF, 0xBF, 0xBF, 0xBF, 0xBF, 0x9F, 0xBF, 0xBF};
static const unsigned char second_lo4[5] = {0x90, 0x80, 0x80, 0x80, 0x80};
static const unsigned char second_hi4[5] = {0xBF, 0xBF, 0xBF, 0xBF, 0x8F};

#define ASCII_HIGH_BITS UINT64_C(0x8080808080808080)
#define IS_TAIL(b) (((b) & 0xC0u) == 0x80u)
#define IN_RANGE(b, lo, hi) ((unsigned int)((b) - (lo)) <= (unsigned int)((hi) - (lo)))

#if (defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__) || defined(_MSC_VER)
/* Byte i of a loaded word is bits 8i..8i+7: the word checks below rely on it. */
#define WORDS_LITTLE_ENDIAN 1
#endif

/* Whether the 8 bytes of `w`, preceded by a 2-byte lead iff `*carry` (0x80, else 0),
 * are ASCII and complete 2-byte sequences, possibly ending with a 2-byte lead (which
 * sets `*carry` for the next word). Branch-free, for Latin, Greek, Cyrillic, Hebrew,
 * Arabic... text. False means "not sure": the caller checks one sequence at a time. */
static inline int
word_is_ascii_or_2byte(uint64_t w, uint64_t *carry)
{
#ifdef WORDS_LITTLE_ENDIAN
    const uint64_t high = w & ASCII_HIGH_BITS;         /* 1xxxxxxx */
    const uint64_t bit6 = (w << 1) & ASCII_HIGH_BITS;  /* bit 6 of each byte, at bit 7 */
    const uint64_t bit5 = (w << 2) & ASCII_HIGH_BITS;  /* bit 5 of each byte, at bit 7 */
    const uint64_t tail = high & ~bit6;                /* 10xxxxxx */
    const uint64_t lead = high & bit6;                 /* 11xxxxxx */
    const uint64_t lead2 = lead & ~bit5;               /* 110xxxxx */
    /* C0 and C1 (overlong) are the 2-byte leads with bits 4..1 all zero. */
    const uint64_t nonzero_4_1 = ((w & UINT64_C(0x1E1E1E1E1E1E1E1E)) +
                                  UINT64_C(0x7F7F7F7F7F7F7F7F)) & ASCII_HIGH_BITS;
    /* Every continuation byte right after a 2-byte lead, and only there. */
    const uint64_t expected_tail = (lead2 << 8) | *carry;
    if ((lead & bit5) | (lead2 & ~nonzero_4_1) | (tail ^ expected_tail)) {
        return 0;
    }
    *carry = lead2 >> 56;
    return 1;
#else
    if (*carry != 0 || (w & ASCII_HIGH_BITS) != 0) {
        return 0;
    }
    return 1;
#endif
}

/* From a character boundary, skip valid UTF-8 while at least 8 bytes are left;
 * return where it stopped (at a character boundary). It alternates between a word
 * mode (ASCII 32 or 8 bytes at a time, ASCII mixed with 2-byte sequences 8 bytes at
 * a time) and a sequence mode (one 2-, 3- or 4-byte sequence at a time, for CJK,
 * emoji...), which it leaves at the next ASCII byte after at least 8 bytes. */
static const unsigned char *
utf8_fast(const unsigned char *p, const unsigned char *const end)
{
    while (end - p >= 8) {
        uint64_t carry = 0;
        while (end - p >= 8) {
            uint64_t w = load64(p);
            if ((w & ASCII_HIGH_BITS) == 0 && carry == 0) {
                p += 8;
                while (end - p >= 32 &&
                       !((load64(p) | load64(p + 8) | load64(p + 16) | load64(p + 24)) &
                         ASCII_HIGH_BITS)) {
                    p += 32;
                }
                continue;
            }
            if (!word_is_ascii_or_2byte(w, &carry)) {
                break;
            }
            p += 8;
        }
        if (carry != 0) {
            p -= 1; /* back to the pending 2-byte lead: a character boundary */
        }

        const unsigned char *const min_stop = p + 8;
        while (end - p >= 4) {
            unsigned int b0 = p[0];
            if (b0 < 0x80) {
                if (p >= min_stop) {
                    break; /* back to word mode */
                }
                p++;
                continue;
            }
            unsigned int b1 = p[1];
            if (b0 < 0xE0) { /* UTF8-2 = %xC2-DF UTF8-tail */
                if (UNLIKELY(b0 < 0xC2 || !IS_TAIL(b1))) {
                    return p;
                }
                p += 2;
            }
            else if (b0 < 0xF0) { /* UTF8-3 */
                if (UNLIKELY(!IN_RANGE(b1, second_lo3[b0 & 0x0F], second_hi3[b0 & 0x0F]) ||
                             !IS_TAIL(p[2]))) {
                    return p;
                }
                p += 3;
            }
            else { /* UTF8-4 */
                if (UNLIKELY(b0 > 0xF4 ||
                             !IN_RANGE(b1, second_lo4[b0 & 0x07], second_hi4[b0 & 0x07]) ||
                             !IS_TAIL(p[2]) || !IS_TAIL(p[3]))) {
                    return p;
                }
                p += 4;
            }
        }
        if (end - p < 4) {
            break;
        }
    }
    return p;
}

/* Run the validator from shift-state `s` over p[0..n); return the shift-state. */
static unsigned int
utf8_run(const unsigned char *p, Py_ssize_t n, unsigned int s)
{
    const unsigned char *const end = p + n;

    for (;;) {
        if (s == SHIFT_ACC) {
            p = utf8_fast(p, end);
        }
        /* The automaton until the next character boundary: it finishes an open
         * sequence, rejects what the fast path stopped at, or eats the tail. */
        while (p < end) {
            s = (unsigned int)(utf8_rows[*p++] >> s) & 63u;
            if (s == SHIFT_ACC || s == SHIFT_REJ) {
                break;
            }
        }
        if (p == end || s == SHIFT_REJ) {
            return s;
        }
    }
}

PyDoc_STRVAR(validate_utf8_doc,
             "validate_utf8(data, state=0)\n--\n\n"
             "Feed data to the incremental UTF-8 validator in state; return the new state\n"
             "(0 complete and valid, -1 invalid, else inside a multi-byte sequence).");

static PyObject *
validate_utf8(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"data", "state"};
    PyObject *argv[2];
    input_t data;
    long state = 0;
    unsigned int s;

    (void)module;
    if (parse_args("validate_utf8", args, nargs, kwnames, names, 1, 2, argv) < 0) {
        return NULL;
    }
    if (argv[1] != NULL) {
        state = PyLong_AsLong(argv[1]); /* uses __index__: ints and bools, not floats */
        if (state == -1 && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
                return NULL;
            }
            PyErr_Clear();
            state = LONG_MAX; /* out of range: reported below */
        }
        if (state < -1 || state >= REJ) {
            PyErr_Format(PyExc_ValueError, "invalid UTF-8 validator state: %R", argv[1]);
            return NULL;
        }
    }
    if (input_get(argv[0], &data) < 0) {
        return NULL;
    }
    s = state == -1 ? SHIFT_REJ : SHIFT((unsigned int)state);
    if (s != SHIFT_REJ && data.len > 0) {
        if (data.len >= GIL_RELEASE_THRESHOLD) {
            Py_BEGIN_ALLOW_THREADS
            s = utf8_run(data.buf, data.len, s);
            Py_END_ALLOW_THREADS
        }
        else {
            s = utf8_run(data.buf, data.len, s);
        }
    }
    input_release(&data);
    return PyLong_FromLong(s == SHIFT_REJ ? -1L : (long)(s / 6u));
}

/* ------------------------------------------------------------------------ */
/* Module                                                                   */
/* ------------------------------------------------------------------------ */

static PyMethodDef speedups_methods[] = {
    {"unmask_join", (PyCFunction)(void (*)(void))unmask_join, METH_FASTCALL, unmask_join_doc},
    {"apply_mask", (PyCFunction)(void (*)(void))apply_mask, METH_FASTCALL | METH_KEYWORDS,
     apply_mask_doc},
    {"validate_utf8", (PyCFunction)(void (*)(void))validate_utf8, METH_FASTCALL | METH_KEYWORDS,
     validate_utf8_doc},
    {NULL, NULL, 0, NULL},
};

static int
speedups_exec(PyObject *module)
{
    if (PyModule_AddIntConstant(module, "UTF8_ACCEPT", 0) < 0) {
        return -1;
    }
    if (PyModule_AddIntConstant(module, "UTF8_REJECT", -1) < 0) {
        return -1;
    }
    return 0;
}

static PyModuleDef_Slot speedups_slots[] = {
    {Py_mod_exec, speedups_exec},
    {0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "fullduplex.protocol._speedups",
    .m_doc = "C versions of apply_mask and validate_utf8 (see mask.py and utf8.py).",
    .m_size = 0,
    .m_methods = speedups_methods,
    .m_slots = speedups_slots,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    build_utf8_rows(); /* constant data, identical for every interpreter */
    return PyModuleDef_Init(&speedups_module);
}

/* The Internet checksum's ones' complement sum (RFC 1071), the one per-packet loop of the
 * userspace dataplane's offloads (ocfpy/esp/offload.py) that Python cannot do in C calls:
 * a TCP segment cut from a super-packet needs its checksum over every payload byte, which
 * costs 3-7 us per 1400 bytes in Python (int.from_bytes + modulo) and well under 0.2 us here.
 * Optional: without it, offload.py uses ocfpy.esp.gso.ones_complement_sum, the same result.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* sum16(buffer) -> int: the folded (not complemented) 16-bit ones' complement sum of the
 * bytes read as big-endian words; an odd last byte counts as if followed by a zero. */
static PyObject *
sum16(PyObject *self, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *p = view.buf;
    Py_ssize_t n = view.len;
    uint64_t acc = 0;
    /* Native-order 32-bit loads: the ones' complement sum is byte-order independent up to a
     * final byte swap (RFC 1071 2.B), and a 64-bit accumulator absorbs the carries. */
    while (n >= 4) {
        uint32_t w;
        memcpy(&w, p, 4);
        acc += w;
        p += 4;
        n -= 4;
    }
    if (n >= 2) {
        uint16_t w;
        memcpy(&w, p, 2);
        acc += w;
        p += 2;
        n -= 2;
    }
    if (n) {
        uint16_t w = 0;
        memcpy(&w, p, 1); /* the byte goes first in memory, i.e. the high half big-endian */
        acc += w;
    }
    while (acc >> 16)
        acc = (acc & 0xFFFF) + (acc >> 16);
    uint16_t s = (uint16_t)acc;
#if PY_BIG_ENDIAN == 0
    s = (uint16_t)((s >> 8) | (s << 8));
#endif
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(s);
}

/* complete(frame) -> bytes: the IP packet behind the 10-byte virtio_net_hdr of a frame read
 * from the TUN without GSO, its checksum finished where the header says (NEEDS_CSUM: the
 * field holds the pseudo-header sum). The plain path's one added cost, done in one copy.
 * None for a request outside the packet (the caller falls back to Python, which passes it on). */
static PyObject *
complete(PyObject *self, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *f = view.buf;
    Py_ssize_t n = view.len - 10;
    if (n < 0) {
        PyBuffer_Release(&view);
        Py_RETURN_NONE;
    }
    unsigned start = f[6] | (f[7] << 8), off = f[8] | (f[9] << 8);
    if (start + off + 2 > (size_t)n) {
        PyBuffer_Release(&view);
        Py_RETURN_NONE;
    }
    PyObject *out = PyBytes_FromStringAndSize((const char *)f + 10, n);
    PyBuffer_Release(&view);
    if (out == NULL)
        return NULL;
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(out);
    uint64_t acc = 0;
    const unsigned char *q = p + start;
    Py_ssize_t m = n - start;
    while (m >= 4) { uint32_t w; memcpy(&w, q, 4); acc += w; q += 4; m -= 4; }
    if (m >= 2) { uint16_t w; memcpy(&w, q, 2); acc += w; q += 2; m -= 2; }
    if (m) { uint16_t w = 0; memcpy(&w, q, 1); acc += w; }
    while (acc >> 16)
        acc = (acc & 0xFFFF) + (acc >> 16);
    uint16_t s = (uint16_t)acc;
#if PY_BIG_ENDIAN == 0
    s = (uint16_t)((s >> 8) | (s << 8));
#endif
    s = (uint16_t)~s;
    if (s == 0 && off == 6)
        s = 0xFFFF; /* UDP: 0 means "no checksum" (RFC 768) */
    p[start + off] = s >> 8;
    p[start + off + 1] = s & 0xFF;
    return out;
}

static PyMethodDef methods[] = {
    {"sum16", sum16, METH_O, "Folded 16-bit ones' complement sum (RFC 1071), big-endian."},
    {"complete", complete, METH_O, "The packet behind a NEEDS_CSUM virtio_net_hdr, checksum done."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "ocfpy.esp._csum", NULL, -1, methods,
};

PyMODINIT_FUNC
PyInit__csum(void)
{
    return PyModule_Create(&module);
}

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

/* The folded (not complemented) 16-bit ones' complement sum of m bytes read as big-endian
 * words, an odd last byte counting as if followed by a zero. Native-order 32-bit loads: the
 * sum is byte-order independent up to a final byte swap (RFC 1071 2.B), and a 64-bit
 * accumulator absorbs the carries. */
static uint32_t
add_words(const unsigned char *q, Py_ssize_t m)
{
    uint64_t acc = 0;
    while (m >= 4) { uint32_t w; memcpy(&w, q, 4); acc += w; q += 4; m -= 4; }
    if (m >= 2) { uint16_t w; memcpy(&w, q, 2); acc += w; q += 2; m -= 2; }
    if (m) { uint16_t w = 0; memcpy(&w, q, 1); acc += w; } /* the byte first in memory */
    while (acc >> 16)
        acc = (acc & 0xFFFF) + (acc >> 16);
    uint16_t s = (uint16_t)acc;
#if PY_BIG_ENDIAN == 0
    s = (uint16_t)((s >> 8) | (s << 8));
#endif
    return s;
}

/* sum16(buffer) -> int: the folded (not complemented) 16-bit ones' complement sum of the
 * bytes read as big-endian words; an odd last byte counts as if followed by a zero. */
static PyObject *
sum16(PyObject *self, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    uint32_t s = add_words(view.buf, view.len);
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
    uint16_t s = (uint16_t)add_words(p + start, n - start);
    s = (uint16_t)~s;
    if (s == 0 && off == 6)
        s = 0xFFFF; /* UDP: 0 means "no checksum" (RFC 768) */
    p[start + off] = s >> 8;
    p[start + off + 1] = s & 0xFF;
    return out;
}


/* whole(packet, proto) -> bool: whether the kernel would take this IPv4 (IHL 5) or IPv6 (no
 * extension header) TCP or UDP packet alone: IP length field == the packet's length
 * (RFC 791 3.1, RFC 8200 3), the IPv4 header checksum (RFC 791 3.1), the UDP length
 * (RFC 768), and the transport checksum over the pseudo-header (RFC 9293 3.1, RFC 768,
 * RFC 8200 8.1; an IPv4 UDP checksum of 0 means none was computed). offload.py's coalescer
 * asks it before a segment joins a run (docs/security.md, finding O2); offload._whole_py is
 * the same in Python. The caller has checked the version, IHL and protocol bytes. */
static PyObject *
whole(PyObject *self, PyObject *args)
{
    Py_buffer view;
    int proto;
    if (!PyArg_ParseTuple(args, "y*i", &view, &proto))
        return NULL;
    const unsigned char *p = view.buf;
    Py_ssize_t n = view.len;
    int ok = 0;
    int v4 = n >= 1 && (p[0] >> 4) == 4;
    Py_ssize_t ip = v4 ? 20 : 40;
    if (n < ip + 8 || n > 0xFFFF + 40)
        goto done;
    if (v4) {
        if (((p[2] << 8) | p[3]) != n || add_words(p, 20) != 0xFFFF)
            goto done;
    } else if (((p[4] << 8) | p[5]) + 40 != n) {
        goto done;
    }
    if (proto == 17) {
        if (((p[ip + 4] << 8) | p[ip + 5]) != n - ip)
            goto done;
        if (v4 && !p[ip + 6] && !p[ip + 7]) {
            ok = 1;
            goto done;
        }
    }
    {
        uint64_t acc = (uint64_t)add_words(v4 ? p + 12 : p + 8, v4 ? 8 : 32)
            + (uint64_t)proto + (uint64_t)(n - ip) + add_words(p + ip, n - ip);
        while (acc >> 16)
            acc = (acc & 0xFFFF) + (acc >> 16);
        ok = acc == 0xFFFF;
    }
done:
    PyBuffer_Release(&view);
    return PyBool_FromLong(ok);
}

static PyMethodDef methods[] = {
    {"whole", whole, METH_VARARGS, "Whether a TCP/UDP packet's lengths and checksums hold."},
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

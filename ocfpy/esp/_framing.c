/* The ESP framing around one AEAD call per packet (ocfpy/esp/framing.py has the contract and
 * the pure-Python twin that every test and the esp_framing fuzz target hold it to).
 *
 * What runs here is what the profile showed as Python bytecode per packet: building the
 * header, IV, trailer and AAD of each packet of a batch, joining header and sealed bytes into
 * the wire packet, and on the way in the length checks, the (IV, ciphertext, AAD) of each
 * packet and the trailer check after the AEAD opened it. The AEAD itself is NOT here: both
 * functions call the session's seal_batch / open_batch (a Python callable handed in), so the
 * dispatcher still decides the driver, counts, and migrates on a driver failure.
 *
 * Everything inbound is attacker-controlled until the AEAD tag verified, and the trailer
 * after that: every length is checked before a byte is read.
 *
 * Optional: without it (no C compiler, or OCFPY_PURE_PYTHON=1), framing.py runs the Python
 * twin, with the same results.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define IV_SIZE 8  /* RFC 4106 s. 3.1, RFC 4309 s. 3.1, RFC 7634 s. 2: 8-byte explicit IV */
#define HDR_SIZE 8 /* SPI, sequence number (RFC 4303 s. 2) */
#define NH_FROM_VERSION (-1)

static void
put32(unsigned char *p, uint32_t v)
{
    p[0] = v >> 24;
    p[1] = v >> 16;
    p[2] = v >> 8;
    p[3] = v;
}

static void
put64(unsigned char *p, uint64_t v)
{
    put32(p, (uint32_t)(v >> 32));
    put32(p + 4, (uint32_t)v);
}

/* seal_frames(seal_batch, spi, first_seq, payloads, next_header, align, esn) -> list[bytes]
 *
 * Packet i gets sequence number first_seq + i (64 bits; the low half on the wire) and
 * IV = that number (unique per key, RFC 4106 s. 3.1). Plaintext = payload || padding 1, 2,
 * 3, ... || pad length || next header, padded so that it ends on `align` (RFC 4303 s. 2.4,
 * 2.5, 2.6); next_header -1: tunnel mode, 4 for an IPv4 payload, else 41 (s. 2.6). AAD =
 * SPI || seq low, or SPI || seq high || seq low with ESN (RFC 4106 s. 5, RFC 7634 s. 2.1,
 * RFC 4303 s. 2.2.1). Wire = SPI || seq low || IV || sealed (s. 2, 3.3). */
static PyObject *
seal(PyObject *self, PyObject *args)
{
    PyObject *seal_batch, *seq_obj, *payloads;
    const char *spi;
    Py_ssize_t spi_len;
    int nh_arg, align, esn;
    if (!PyArg_ParseTuple(args, "Oy#OOiip:seal_frames", &seal_batch, &spi, &spi_len, &seq_obj,
                          &payloads, &nh_arg, &align, &esn))
        return NULL;
    if (spi_len != 4) {
        PyErr_SetString(PyExc_ValueError, "the SPI must be 4 bytes");
        return NULL;
    }
    if (align < 1 || align > 256) {
        PyErr_SetString(PyExc_ValueError, "alignment must be 1..256 (the pad length is one byte)");
        return NULL;
    }
    if (nh_arg < NH_FROM_VERSION || nh_arg > 255) {
        PyErr_SetString(PyExc_ValueError, "next header must be 0..255, or -1 for tunnel mode");
        return NULL;
    }
    unsigned long long first = PyLong_AsUnsignedLongLong(seq_obj);
    if (first == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    PyObject *seq = PySequence_Fast(payloads, "payloads must be a sequence");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > 0 && (uint64_t)(n - 1) > UINT64_MAX - first) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_OverflowError, "sequence numbers beyond 64 bits");
        return NULL;
    }
    PyObject *items = PyList_New(n);
    PyObject *result = NULL, *sealed = NULL, *wires = NULL;
    if (items == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *p = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyBytes_CheckExact(p)) {
            PyErr_Format(PyExc_TypeError, "payload %zd is %.100s, not bytes", i,
                         Py_TYPE(p)->tp_name);
            goto done;
        }
        Py_ssize_t len = PyBytes_GET_SIZE(p);
        const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(p);
        if (len > PY_SSIZE_T_MAX - 2 - 256) {
            PyErr_SetString(PyExc_OverflowError, "payload too long");
            goto done;
        }
        int nh = nh_arg;
        if (nh == NH_FROM_VERSION)
            nh = (len > 0 && data[0] >> 4 == 4) ? 4 : 41;
        Py_ssize_t pad = (align - (len + 2) % align) % align;
        uint64_t s = first + (uint64_t)i;
        unsigned char ivb[IV_SIZE], aadb[12];
        put64(ivb, s);
        memcpy(aadb, spi, 4);
        Py_ssize_t aad_len;
        if (esn) {
            put64(aadb + 4, s);
            aad_len = 12;
        } else {
            put32(aadb + 4, (uint32_t)s);
            aad_len = 8;
        }
        PyObject *pt = PyBytes_FromStringAndSize(NULL, len + pad + 2);
        if (pt == NULL)
            goto done;
        unsigned char *q = (unsigned char *)PyBytes_AS_STRING(pt);
        memcpy(q, data, len);
        for (Py_ssize_t k = 0; k < pad; k++)
            q[len + k] = (unsigned char)(k + 1); /* RFC 4303 s. 2.4: 1, 2, 3, ... */
        q[len + pad] = (unsigned char)pad;
        q[len + pad + 1] = (unsigned char)nh;
        PyObject *iv = PyBytes_FromStringAndSize((const char *)ivb, IV_SIZE);
        PyObject *aad = PyBytes_FromStringAndSize((const char *)aadb, aad_len);
        PyObject *t = (iv && aad) ? PyTuple_Pack(3, iv, pt, aad) : NULL;
        Py_XDECREF(iv);
        Py_XDECREF(aad);
        Py_DECREF(pt);
        if (t == NULL)
            goto done;
        PyList_SET_ITEM(items, i, t);
    }
    sealed = PyObject_CallOneArg(seal_batch, items);
    if (sealed == NULL)
        goto done;
    PyObject *out = PySequence_Fast(sealed, "seal_batch must return a sequence");
    if (out == NULL)
        goto done;
    Py_DECREF(sealed);
    sealed = out;
    if (PySequence_Fast_GET_SIZE(sealed) != n) {
        PyErr_Format(PyExc_ValueError, "seal_batch returned %zd results for %zd items",
                     PySequence_Fast_GET_SIZE(sealed), n);
        goto done;
    }
    wires = PyList_New(n);
    if (wires == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *c = PySequence_Fast_GET_ITEM(sealed, i);
        if (!PyBytes_CheckExact(c)) {
            PyErr_Format(PyExc_TypeError, "seal_batch result %zd is %.100s, not bytes", i,
                         Py_TYPE(c)->tp_name);
            goto done;
        }
        Py_ssize_t clen = PyBytes_GET_SIZE(c);
        if (clen > PY_SSIZE_T_MAX - HDR_SIZE - IV_SIZE) {
            PyErr_SetString(PyExc_OverflowError, "sealed packet too long");
            goto done;
        }
        PyObject *w = PyBytes_FromStringAndSize(NULL, HDR_SIZE + IV_SIZE + clen);
        if (w == NULL)
            goto done;
        unsigned char *q = (unsigned char *)PyBytes_AS_STRING(w);
        uint64_t s = first + (uint64_t)i;
        memcpy(q, spi, 4);
        put32(q + 4, (uint32_t)s);
        put64(q + 8, s);
        memcpy(q + HDR_SIZE + IV_SIZE, PyBytes_AS_STRING(c), clen);
        PyList_SET_ITEM(wires, i, w);
    }
    result = wires;
    wires = NULL;
done:
    Py_DECREF(seq);
    Py_XDECREF(items);
    Py_XDECREF(sealed);
    Py_XDECREF(wires);
    return result;
}

/* open_frames(open_batch, items, esn, icv, align, drops) -> list[(payload, next header) | drop]
 *
 * items: (packet, 64-bit sequence number) pairs, the number inferred by the caller's replay
 * check (RFC 4303 s. 3.4.3, A2). drops: (truncated, auth, bad padding), the objects returned
 * for each reason. A packet shorter than header + IV + one aligned block + ICV, or whose
 * ciphertext is not aligned (s. 2.4), is truncated and never reaches the AEAD. The AAD is
 * rebuilt from the wire's SPI and the inferred number (RFC 4106 s. 5, RFC 4303 s. 2.2.1), so a
 * wrong high half fails the tag. After the tag: pad length within the plaintext and pad bytes
 * 1, 2, 3, ... (s. 2.4), else bad padding; the next header is returned for the caller to
 * check against the payload (s. 2.6, 3.4.4.1). */
static PyObject *
open_(PyObject *self, PyObject *args)
{
    PyObject *open_batch, *items_in, *drops;
    int esn, icv, align;
    if (!PyArg_ParseTuple(args, "OOpiiO!:open_frames", &open_batch, &items_in, &esn, &icv, &align,
                          &PyTuple_Type, &drops))
        return NULL;
    if (PyTuple_GET_SIZE(drops) != 3) {
        PyErr_SetString(PyExc_ValueError, "drops must be (truncated, auth, bad padding)");
        return NULL;
    }
    if (align < 1 || align > 256 || icv < 0 || icv > 64) {
        PyErr_SetString(PyExc_ValueError, "alignment must be 1..256 and the ICV 0..64 bytes");
        return NULL;
    }
    PyObject *truncated = PyTuple_GET_ITEM(drops, 0), *auth = PyTuple_GET_ITEM(drops, 1),
             *bad_pad = PyTuple_GET_ITEM(drops, 2);
    PyObject *seq = PySequence_Fast(items_in, "items must be a sequence");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    Py_ssize_t min_size = HDR_SIZE + IV_SIZE + align + icv;
    PyObject *out = PyList_New(n), *work = PyList_New(0), *plains = NULL, *result = NULL;
    if (out == NULL || work == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *it = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyTuple_Check(it) || PyTuple_GET_SIZE(it) != 2) {
            PyErr_Format(PyExc_TypeError, "item %zd is not a (packet, sequence number) pair", i);
            goto done;
        }
        PyObject *pkt = PyTuple_GET_ITEM(it, 0);
        if (!PyBytes_CheckExact(pkt)) {
            PyErr_Format(PyExc_TypeError, "packet %zd is %.100s, not bytes", i,
                         Py_TYPE(pkt)->tp_name);
            goto done;
        }
        unsigned long long s = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(it, 1));
        if (s == (unsigned long long)-1 && PyErr_Occurred())
            goto done;
        Py_ssize_t len = PyBytes_GET_SIZE(pkt);
        if (len < min_size || (len - HDR_SIZE - IV_SIZE - icv) % align) {
            Py_INCREF(truncated);
            PyList_SET_ITEM(out, i, truncated);
            continue;
        }
        const char *d = PyBytes_AS_STRING(pkt);
        unsigned char aadb[12];
        memcpy(aadb, d, 4);
        Py_ssize_t aad_len = 8;
        if (esn) {
            put64(aadb + 4, s);
            aad_len = 12;
        } else {
            memcpy(aadb + 4, d + 4, 4);
        }
        PyObject *iv = PyBytes_FromStringAndSize(d + HDR_SIZE, IV_SIZE);
        PyObject *ct = PyBytes_FromStringAndSize(d + HDR_SIZE + IV_SIZE,
                                                 len - HDR_SIZE - IV_SIZE);
        PyObject *aad = PyBytes_FromStringAndSize((const char *)aadb, aad_len);
        PyObject *t = (iv && ct && aad) ? PyTuple_Pack(3, iv, ct, aad) : NULL;
        Py_XDECREF(iv);
        Py_XDECREF(ct);
        Py_XDECREF(aad);
        if (t == NULL)
            goto done;
        int rc = PyList_Append(work, t);
        Py_DECREF(t);
        if (rc < 0)
            goto done;
    }
    Py_ssize_t m = PyList_GET_SIZE(work);
    if (m) {
        PyObject *r = PyObject_CallOneArg(open_batch, work);
        if (r == NULL)
            goto done;
        plains = PySequence_Fast(r, "open_batch must return a sequence");
        Py_DECREF(r);
        if (plains == NULL)
            goto done;
        if (PySequence_Fast_GET_SIZE(plains) != m) {
            PyErr_Format(PyExc_ValueError, "open_batch returned %zd results for %zd items",
                         PySequence_Fast_GET_SIZE(plains), m);
            goto done;
        }
    }
    Py_ssize_t j = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyList_GET_ITEM(out, i) != NULL)
            continue; /* truncated */
        PyObject *p = PySequence_Fast_GET_ITEM(plains, j++);
        PyObject *r;
        if (p == Py_None) {
            r = auth;
            Py_INCREF(r);
        } else if (!PyBytes_CheckExact(p)) {
            PyErr_Format(PyExc_TypeError, "open_batch result is %.100s, not bytes",
                         Py_TYPE(p)->tp_name);
            goto done;
        } else {
            Py_ssize_t len = PyBytes_GET_SIZE(p);
            const unsigned char *q = (const unsigned char *)PyBytes_AS_STRING(p);
            Py_ssize_t pad = len >= 2 ? q[len - 2] : 0;
            Py_ssize_t end = len - 2 - pad;
            int ok = len >= 2 && end >= 0;
            for (Py_ssize_t k = 0; ok && k < pad; k++)
                ok = q[end + k] == (unsigned char)(k + 1);
            if (!ok) {
                r = bad_pad;
                Py_INCREF(r);
            } else {
                PyObject *payload = PyBytes_FromStringAndSize((const char *)q, end);
                PyObject *nh = payload ? PyLong_FromLong(q[len - 1]) : NULL;
                r = nh ? PyTuple_Pack(2, payload, nh) : NULL;
                Py_XDECREF(payload);
                Py_XDECREF(nh);
                if (r == NULL)
                    goto done;
            }
        }
        PyList_SET_ITEM(out, i, r);
    }
    result = out;
    out = NULL;
done:
    Py_DECREF(seq);
    Py_XDECREF(work);
    Py_XDECREF(plains);
    Py_XDECREF(out); /* PyList_New left NULL slots: list dealloc skips them */
    return result;
}

static PyMethodDef methods[] = {
    {"seal_frames", seal, METH_VARARGS,
     "seal_frames(seal_batch, spi, first_seq, payloads, next_header, align, esn) -> ESP packets"},
    {"open_frames", open_, METH_VARARGS,
     "open_frames(open_batch, items, esn, icv, align, drops) -> (payload, next header) or a drop each"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "ocfpy.esp._framing", NULL, -1, methods,
};

PyMODINIT_FUNC
PyInit__framing(void)
{
    return PyModule_Create(&module);
}

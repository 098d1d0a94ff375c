/* The head scans of the splice path, in C: `scan.scan_response_head` and
 * `scan.scan_request_head`, line for line.
 *
 * Why C: each runs once per proxied request or response, and in Python (compiled by mypyc
 * or not) a scan must split the head into one bytes object per line to look at their first
 * letters: a list and ~10 objects made and freed per head, about a fifth of the instructions
 * a whole proxied request cost (docs/benchmarks.md). Here they walk the bytes in place and
 * allocate only the answer. Same contracts as the Python functions, which stay the
 * reference (tests/unit/test_scan.py compares both on generated and mutated heads) and run
 * when this module is not built or HTTPSCALE_PURE_PYTHON is set.
 *
 * Each scan also says whether the message is whole and checked (see "the strict check"
 * below): such a message skips llhttp altogether.
 *
 * Built by scripts/compile next to the mypyc modules; no state but constant tables and the
 * two result types (`scan.RequestScan`, `scan.ResponseScan`, named tuples) taken at import,
 * no GIL release, no Python calls: it reads one immutable bytes object and returns a new
 * named tuple or None.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* Reads up to this size are scanned whole, as scan._SPLIT_WHOLE. */
#define SPLIT_WHOLE 2048

static inline unsigned char lower(unsigned char c) {
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

/* Whether s[:n], lower-cased, equals `name` (lower-case, length k). */
static int equal_lower(const unsigned char *s, Py_ssize_t n, const char *name, Py_ssize_t k) {
    if (n != k) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < k; i++) {
        if (lower(s[i]) != (unsigned char)name[i]) {
            return 0;
        }
    }
    return 1;
}

/* scan._named: the line (length n) is the field `name` (lower-case, length k). */
static int named(const unsigned char *line, Py_ssize_t n, const char *name, Py_ssize_t k) {
    return n > k && line[k] == ':' && equal_lower(line, k, name, k);
}

/* s[a:b] stripped of spaces and tabs, as bytes.strip(b" \t"): the new bounds in *a, *b. */
static void strip(const unsigned char *s, Py_ssize_t *a, Py_ssize_t *b) {
    while (*a < *b && (s[*a] == ' ' || s[*a] == '\t')) {
        (*a)++;
    }
    while (*b > *a && (s[*b - 1] == ' ' || s[*b - 1] == '\t')) {
        (*b)--;
    }
}

/* A Connection line's value, stripped of spaces and tabs: 1 keep-alive, 2 close, 0 other. */
#define CONNECTION_KEEP_ALIVE 1
#define CONNECTION_CLOSE 2
static int connection_token(const unsigned char *line, Py_ssize_t n) {
    Py_ssize_t a = 11, b = n; /* after "connection:" */
    strip(line, &a, &b);
    if (equal_lower(line + a, b - a, "keep-alive", 10)) {
        return CONNECTION_KEEP_ALIVE;
    }
    return equal_lower(line + a, b - a, "close", 5) ? CONNECTION_CLOSE : 0;
}

static const char *const HOP_BY_HOP[] = {
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
    "upgrade", "proxy-authenticate", "proxy-authorization",
};

/* `line[:line.find(b":")].lower() in HOP_BY_HOP`, the Python spelling's quirk included: with
 * no colon, find is -1 and the name is the line without its last byte. */
static int hop_by_hop(const unsigned char *line, Py_ssize_t n) {
    const unsigned char *colon = memchr(line, ':', (size_t)n);
    Py_ssize_t k = colon != NULL ? colon - line : n - 1;
    for (size_t i = 0; i < sizeof(HOP_BY_HOP) / sizeof(HOP_BY_HOP[0]); i++) {
        if (equal_lower(line, k, HOP_BY_HOP[i], (Py_ssize_t)strlen(HOP_BY_HOP[i]))) {
            return 1;
        }
    }
    return 0;
}

/* The next CRLF at or after `at` and before `limit`, as bytes.split(b"\r\n") finds them
 * (left to right, not overlapping); -1 when there is none. */
static Py_ssize_t find_crlf(const unsigned char *d, Py_ssize_t at, Py_ssize_t limit) {
    while (at + 1 < limit) {
        const unsigned char *cr = memchr(d + at, '\r', (size_t)(limit - 1 - at));
        if (cr == NULL) {
            return -1;
        }
        Py_ssize_t i = cr - d;
        if (d[i + 1] == '\n') {
            return i;
        }
        at = i + 1;
    }
    return -1;
}

/* -- the strict check of a whole message ------------------------------------------------
 *
 * A message the scan finds whole (its head and the body its Content-Length announces, all in
 * this read) and checks here byte by byte skips llhttp: the proxy calls its own callbacks.
 * The grammar is a strict subset of what llhttp accepts (RFC 9110/9112 tokens, printable
 * ASCII values, CRLF only), so "checked" implies llhttp would read the same message the same
 * way (tests/unit/test_whole.py holds both to that); anything else, obs-text in a value
 * included, still goes through llhttp. */

/* tchar (RFC 9110 §5.6.2): a field name's bytes. */
static int is_tchar(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* 1: tchar; 2: a field value's byte (HTAB, SP, VCHAR); 4: a request target's (VCHAR). */
static unsigned char CLASS[256];

static void init_classes(void) {
    for (int c = 0; c < 256; c++) {
        unsigned char k = 0;
        if (is_tchar((unsigned char)c)) {
            k |= 1;
        }
        if (c == '\t' || (c >= 0x20 && c <= 0x7e)) {
            k |= 2;
        }
        if (c >= 0x21 && c <= 0x7e) {
            k |= 4;
        }
        CLASS[c] = k;
    }
}

/* d[at:end] is zero or more field lines, each `tchar+ ":" value CRLF`. */
static int fields_checked(const unsigned char *d, Py_ssize_t at, Py_ssize_t end) {
    while (at < end) {
        Py_ssize_t name = at;
        while (at < end && (CLASS[d[at]] & 1)) {
            at++;
        }
        if (at == name || at >= end || d[at] != ':') {
            return 0;
        }
        at++;
        while (at < end && (CLASS[d[at]] & 2)) {
            at++;
        }
        if (at + 2 > end || d[at] != '\r' || d[at + 1] != '\n') {
            return 0;
        }
        at += 2;
    }
    return 1;
}

/* d[a:b], a Content-Length value stripped of spaces and tabs: 1 to 15 digits (a plain
 * number; anything else, as llhttp's refusals, is left to it). -1 when not. */
static long long plain_length(const unsigned char *d, Py_ssize_t a, Py_ssize_t b) {
    strip(d, &a, &b);
    if (b == a || b - a > 15) {
        return -1;
    }
    long long length = 0;
    for (Py_ssize_t i = a; i < b; i++) {
        if (d[i] < '0' || d[i] > '9') {
            return -1;
        }
        length = length * 10 + (d[i] - '0');
    }
    return length;
}

/* scan.RequestScan and scan.ResponseScan: tuple subclasses (NamedTuple) without fields of
 * their own, so an instance is made as CPython's tuple.__new__ makes one for a subclass. */
static PyTypeObject *request_scan_type;
static PyTypeObject *response_scan_type;

/* A `type` (a tuple subclass) of `items`, whose references it takes over; when one of them
 * is NULL (it failed, with an exception set) or the tuple cannot be made, all are released
 * and NULL returned. */
static PyObject *steal_into_tuple(PyTypeObject *type, PyObject **items, Py_ssize_t n) {
    PyObject *out = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (items[i] == NULL) {
            goto failed;
        }
    }
    out = type->tp_alloc(type, n);
    if (out == NULL) {
        goto failed;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyTuple_SET_ITEM(out, i, items[i]);
    }
    return out;
failed:
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_XDECREF(items[i]);
    }
    return NULL;
}

static PyObject *answer(Py_ssize_t end, long status, int content_length, Py_ssize_t cut1,
                        Py_ssize_t cut1_end, Py_ssize_t cut2, Py_ssize_t cut2_end, int close,
                        Py_ssize_t body_at) {
    PyObject *items[9] = {
        PyLong_FromSsize_t(end), PyLong_FromLong(status), PyBool_FromLong(content_length),
        PyLong_FromSsize_t(cut1), PyLong_FromSsize_t(cut1_end), PyLong_FromSsize_t(cut2),
        PyLong_FromSsize_t(cut2_end), PyBool_FromLong(close), PyLong_FromSsize_t(body_at),
    };
    return steal_into_tuple(response_scan_type, items, 9);
}

static PyObject *scan_response(PyObject *module, PyObject *arg) {
    (void)module;
    if (!PyBytes_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "scan_response() wants bytes, not %.100s",
                     Py_TYPE(arg)->tp_name);
        return NULL;
    }
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(arg);
    Py_ssize_t size = PyBytes_GET_SIZE(arg);
    Py_ssize_t limit = size;
    if (limit > SPLIT_WHOLE) {
        /* A large read: only its head is looked at (the Python side splits data[:end + 4]). */
        const unsigned char *blank = memmem(d, (size_t)limit, "\r\n\r\n", 4);
        if (blank == NULL) {
            Py_RETURN_NONE;
        }
        limit = blank - d + 4;
    }
    Py_ssize_t status_end = find_crlf(d, 0, limit);
    /* The status line: "HTTP/1.1 ddd " and a reason phrase; not 1xx (interim, 101). */
    if (status_end <= 13 || memcmp(d, "HTTP/1.1 ", 9) != 0 || d[9] == '1' || d[12] != ' ') {
        Py_RETURN_NONE;
    }
    long status = (long)(d[9] - 48) * 100 + (long)(d[10] - 48) * 10 + (long)(d[11] - 48);
    int content_length = 0, close = 0;
    long long length = -1; /* the one Content-Length's value; -2: several, or not plain */
    Py_ssize_t cut1 = 0, cut1_end = 0, cut2 = 0, cut2_end = 0;
    Py_ssize_t at = status_end + 2; /* where the current line starts */
    for (;;) {
        Py_ssize_t line_end = find_crlf(d, at, limit);
        if (line_end < 0) {
            Py_RETURN_NONE; /* no blank line in this read: the head is unfinished */
        }
        const unsigned char *line = d + at;
        Py_ssize_t n = line_end - at;
        if (n == 0) {
            break;
        }
        unsigned char first = line[0] | 32; /* the name's first letter, lower-cased */
        if (first == 'c') {
            if (named(line, n, "content-length", 14)) {
                content_length = 1;
                long long value = plain_length(d, at + 15, line_end);
                length = length == -1 && value >= 0 ? value : -2;
            } else if (named(line, n, "connection", 10)) {
                int token = connection_token(line, n);
                if (!token || cut1) {
                    Py_RETURN_NONE; /* upgrade, fields named hop-by-hop, or two Connections */
                }
                close = token == CONNECTION_CLOSE;
                cut1 = at;
                cut1_end = line_end + 2;
            }
        } else if (first == 'k') {
            if (named(line, n, "keep-alive", 10)) {
                if (cut2) {
                    Py_RETURN_NONE;
                }
                cut2 = at;
                cut2_end = line_end + 2;
            }
        } else if (first == 'p' || first == 't' || first == 'u') {
            if (hop_by_hop(line, n)) {
                Py_RETURN_NONE;
            }
        }
        at = line_end + 2;
    }
    /* The blank line starts at `at`. Whole: the body its Content-Length announces is the
     * rest of this read, and every byte of the head is checked (a status a body may follow,
     * digits, a printable reason). */
    Py_ssize_t body_at = -1;
    if (length >= 0 && size - (at + 2) == length && d[9] >= '2' && d[9] <= '5' &&
        d[10] >= '0' && d[10] <= '9' && d[11] >= '0' && d[11] <= '9' && status != 204 &&
        status != 304) {
        int reason = 1;
        for (Py_ssize_t i = 13; i < status_end; i++) {
            if (!(CLASS[d[i]] & 2)) {
                reason = 0;
                break;
            }
        }
        if (reason && fields_checked(d, status_end + 2, at)) {
            body_at = at + 2;
        }
    }
    return answer(at, status, content_length, cut1, cut1_end, cut2, cut2_end, close, body_at);
}

/* The fields that keep a request off the splice path (scan._UNSPLICED_REQUEST_FIELDS). */
static const char *const UNSPLICED_REQUEST_FIELDS[] = {
    "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "proxy-authenticate",
    "proxy-authorization", "expect",
};

/* `line[:line.find(b":")].lower() in names`, with the same quirk as hop_by_hop. */
static int named_one_of(const unsigned char *line, Py_ssize_t n, const char *const *names,
                        size_t count) {
    const unsigned char *colon = memchr(line, ':', (size_t)n);
    Py_ssize_t k = colon != NULL ? colon - line : n - 1;
    for (size_t i = 0; i < count; i++) {
        if (equal_lower(line, k, names[i], (Py_ssize_t)strlen(names[i]))) {
            return 1;
        }
    }
    return 0;
}

/* Append d[a:b] to the list `parts`; 0, or -1 with an exception set. */
static int append_slice(PyObject *parts, const unsigned char *d, Py_ssize_t a, Py_ssize_t b) {
    PyObject *piece = PyBytes_FromStringAndSize((const char *)d + a, b - a);
    if (piece == NULL) {
        return -1;
    }
    int failed = PyList_Append(parts, piece);
    Py_DECREF(piece);
    return failed;
}

/* The methods a request is checked with (its line may skip llhttp), and their bytes objects,
 * made once: what the scan answers as the method (b"" for any other; llhttp is asked then). */
static const char *const METHODS[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"};
#define METHOD_COUNT (sizeof(METHODS) / sizeof(METHODS[0]))
static PyObject *method_objects[METHOD_COUNT];
static PyObject *no_method;

/* scan.scan_request_head, line for line (see there for what is spliced and why). */
static PyObject *scan_request(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "scan_request() takes 4 arguments (%zd given)", nargs);
        return NULL;
    }
    if (!PyBytes_Check(args[0])) {
        PyErr_Format(PyExc_TypeError, "scan_request() wants bytes, not %.100s",
                     Py_TYPE(args[0])->tp_name);
        return NULL;
    }
    Py_ssize_t max_line = PyLong_AsSsize_t(args[1]);
    Py_ssize_t max_fields_bytes = PyLong_AsSsize_t(args[2]);
    Py_ssize_t max_fields = PyLong_AsSsize_t(args[3]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    Py_ssize_t head_end; /* the head, its blank line included: d[:head_end] */
    if (size >= 4 && memcmp(d + size - 4, "\r\n\r\n", 4) == 0) {
        head_end = size; /* a bodiless request (or several, which the loop turns away) */
    } else {
        const unsigned char *blank = memmem(d, (size_t)size, "\r\n\r\n", 4);
        if (blank == NULL) {
            Py_RETURN_NONE;
        }
        head_end = blank - d + 4; /* the rest must be the body its Content-Length announces */
    }
    if (head_end > max_fields_bytes) {
        Py_RETURN_NONE;
    }
    /* The request line: `method SP target SP HTTP/1.1`, not CONNECT. (Every CRLF of the
     * head ends a line: CRLFs cannot overlap, so this is bytes.split's reading.) */
    Py_ssize_t request_line_end = find_crlf(d, 0, head_end);
    Py_ssize_t line_end = request_line_end;
    if (line_end > max_line || line_end < 9 || memcmp(d + line_end - 9, " HTTP/1.1", 9) != 0 ||
        (line_end >= 8 && memcmp(d, "CONNECT ", 8) == 0)) {
        Py_RETURN_NONE;
    }
    int method = -1; /* in METHODS */
    Py_ssize_t method_len = 0;
    for (size_t i = 0; i < METHOD_COUNT; i++) {
        Py_ssize_t k = (Py_ssize_t)strlen(METHODS[i]);
        if (memcmp(d, METHODS[i], (size_t)k) == 0 && d[k] == ' ') { /* line_end >= 9 > k */
            method = (int)i;
            method_len = k;
            break;
        }
    }
    Py_ssize_t host_a = 0, host_b = 0; /* the Host value: d[host_a:host_b] */
    Py_ssize_t xff_a = -1, xff_b = -1; /* an X-Forwarded-For value, when one came */
    int xfp = 0, xfh = 0, keep_alive = 1, connection = 0;
    long long length = -1; /* the Content-Length, if one was sent */
    Py_ssize_t fields = 0;
    Py_ssize_t kept = 0; /* where the bytes not yet in `parts` start */
    PyObject *parts = PyList_New(0); /* the head without the lines cut, as slices of data */
    if (parts == NULL) {
        return NULL;
    }
    Py_ssize_t at = line_end + 2; /* where the current line starts */
    while (at < head_end - 2) {
        line_end = find_crlf(d, at, head_end);
        if (line_end < 0) {
            goto spliced_not; /* cannot happen (the head ends with CRLFCRLF); never trusted */
        }
        const unsigned char *line = d + at;
        Py_ssize_t n = line_end - at;
        if (n == 0) {
            goto spliced_not; /* more than one request in this read: the full pass */
        }
        fields++;
        int cut = 0;
        unsigned char first = line[0] | 32; /* the name's first letter, lower-cased */
        if (first == 'h') {
            if (named(line, n, "host", 4)) {
                if (host_b > host_a) {
                    goto spliced_not; /* a second Host (after a non-empty one) */
                }
                unsigned char last = line[n - 1];
                if (n > 6 && line[5] == ' ' && line[6] != ' ' && line[6] != '\t' && last != ' ' &&
                    last != '\t') {
                    host_a = at + 6, host_b = line_end; /* "Host: value", as clients send it */
                } else {
                    host_a = at + 5, host_b = line_end;
                    strip(d, &host_a, &host_b);
                }
            }
        } else if (first == 'x') {
            if (named(line, n, "x-forwarded-for", 15)) {
                if (xff_a >= 0) {
                    goto spliced_not;
                }
                xff_a = at + 16, xff_b = line_end;
                strip(d, &xff_a, &xff_b);
                cut = 1; /* sent again, with the client's address appended */
            } else if (named(line, n, "x-forwarded-proto", 17)) {
                xfp = 1;
            } else if (named(line, n, "x-forwarded-host", 16)) {
                xfh = 1;
            }
        } else if (first == 'c') {
            if (named(line, n, "connection", 10)) {
                if (connection) {
                    goto spliced_not; /* several Connection fields: llhttp's reading decides */
                }
                connection = cut = 1;
                int token = connection_token(line, n);
                if (!token) {
                    goto spliced_not; /* upgrade, or fields named hop-by-hop */
                }
                keep_alive = token == CONNECTION_KEEP_ALIVE;
            } else if (named(line, n, "content-length", 14)) {
                if (length >= 0) {
                    goto spliced_not; /* several: the full pass */
                }
                length = plain_length(d, at + 15, line_end);
                if (length < 0) {
                    goto spliced_not; /* not a plain number: the full pass refuses it */
                }
            }
        } else if (first == 'k') {
            cut = named(line, n, "keep-alive", 10);
        } else if (first == 't' || first == 'p' || first == 'e' ||
                   (first == 'u' && !(n >= 11 && memcmp(line, "User-Agent:", 11) == 0))) {
            if (named_one_of(line, n, UNSPLICED_REQUEST_FIELDS,
                             sizeof(UNSPLICED_REQUEST_FIELDS) / sizeof(UNSPLICED_REQUEST_FIELDS[0]))) {
                goto spliced_not;
            }
        }
        if (cut) {
            if (append_slice(parts, d, kept, at) < 0) {
                goto failed;
            }
            kept = line_end + 2;
        }
        at = line_end + 2;
    }
    if (fields > max_fields || size != head_end + (length > 0 ? length : 0)) {
        goto spliced_not; /* too many fields; or the body is not all here, or more follows */
    }
    if (append_slice(parts, d, kept, head_end - 2) < 0) {
        goto failed;
    }
    /* Whole: checked byte by byte (a known method, an origin-form target, every field), so
     * llhttp need not read it; the body, if any, is all here (tested above). */
    int whole = 0;
    if (method >= 0 && d[method_len + 1] == '/') {
        whole = 1;
        for (Py_ssize_t i = method_len + 2; i < request_line_end - 9; i++) {
            if (!(CLASS[d[i]] & 4)) {
                whole = 0;
                break;
            }
        }
        whole = whole && fields_checked(d, request_line_end + 2, head_end - 2);
    }
    PyObject *items[11] = {
        PyLong_FromSsize_t(head_end), PyLong_FromSsize_t(request_line_end), parts,
        PyBytes_FromStringAndSize((const char *)d + host_a, host_b - host_a),
        xff_a < 0 ? Py_NewRef(Py_None)
                  : PyBytes_FromStringAndSize((const char *)d + xff_a, xff_b - xff_a),
        PyBool_FromLong(xfp), PyBool_FromLong(xfh), PyBool_FromLong(keep_alive),
        PyLong_FromLongLong(length), Py_NewRef(method >= 0 ? method_objects[method] : no_method),
        PyBool_FromLong(whole),
    };
    return steal_into_tuple(request_scan_type, items, 11);
spliced_not:
    Py_DECREF(parts);
    Py_RETURN_NONE;
failed:
    Py_DECREF(parts);
    return NULL;
}

static PyMethodDef methods[] = {
    {"scan_response", scan_response, METH_O,
     "scan_response(data) -> scan.ResponseScan or None: scan.scan_response_head in C."},
    {"scan_request", (PyCFunction)(void (*)(void))scan_request, METH_FASTCALL,
     "scan_request(data, max_line, max_fields_bytes, max_fields) -> scan.RequestScan or "
     "None: scan.scan_request_head in C."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "httpscale.interceptor._scan",
    "The splice path's head scans in C (see scan.scan_response_head, scan_request_head).", -1,
    methods,
    NULL, NULL, NULL, NULL,
};

/* The named tuple class `name` of httpscale.interceptor.scan (a new reference), or NULL. */
static PyTypeObject *scan_type(PyObject *scan, const char *name) {
    PyObject *type = PyObject_GetAttrString(scan, name);
    if (type == NULL) {
        return NULL;
    }
    if (!PyType_Check(type) || !PyType_IsSubtype((PyTypeObject *)type, &PyTuple_Type)) {
        PyErr_Format(PyExc_TypeError, "httpscale.interceptor.scan.%s is not a tuple type", name);
        Py_DECREF(type);
        return NULL;
    }
    return (PyTypeObject *)type;
}

PyMODINIT_FUNC PyInit__scan(void) {
    init_classes();
    if (request_scan_type == NULL) {
        PyObject *scan = PyImport_ImportModule("httpscale.interceptor.scan");
        if (scan == NULL) {
            return NULL;
        }
        request_scan_type = scan_type(scan, "RequestScan");
        response_scan_type = scan_type(scan, "ResponseScan");
        Py_DECREF(scan);
        if (request_scan_type == NULL || response_scan_type == NULL) {
            Py_CLEAR(request_scan_type);
            Py_CLEAR(response_scan_type);
            return NULL;
        }
    }
    if (no_method == NULL) {
        no_method = PyBytes_FromStringAndSize("", 0);
        if (no_method == NULL) {
            return NULL;
        }
        for (size_t i = 0; i < METHOD_COUNT; i++) {
            method_objects[i] = PyBytes_FromString(METHODS[i]);
            if (method_objects[i] == NULL) {
                return NULL;
            }
        }
    }
    return PyModule_Create(&module_def);
}

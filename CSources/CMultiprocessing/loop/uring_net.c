// TCP sockets for the event loop: address resolution and the non-blocking setup calls (socket,
// bind, listen); the calls that wait (accept, connect, send, recv) go through the ring, after a
// send's first try here (mp_tcp_send_now), which the ring would only make the same way.
//
// Invariants: every descriptor is close-on-exec (a spawned child must not inherit a listener)
// and blocking (io_uring polls a blocking socket itself; a non-blocking one would complete with
// -EAGAIN instead of waiting).
#define _GNU_SOURCE
#include "internal.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

_Static_assert(sizeof(mp_socket_address_t) == 32, "mp_socket_address_t is copied by Swift");
_Static_assert(sizeof(((mp_socket_address_t *)0)->bytes) >= sizeof(struct sockaddr_in6), "room for IPv6");
_Static_assert(_Alignof(struct sockaddr_in6) <= 4 && _Alignof(struct sockaddr_in) <= 4, "bytes is 4-aligned");

static const struct sockaddr *sockaddr_of(const mp_socket_address_t *address) {
    return (const struct sockaddr *)(const void *)address->bytes;
}

/// inet_pton(AF_INET)'s dotted quad (four decimal numbers up to 255, none with a leading zero),
/// read by hand: glibc's takes about 190 instructions for "127.0.0.1", this a third of that.
/// Takes exactly the strings inet_pton takes.
static int parse_ipv4(const char *s, struct in_addr *out) {
    uint32_t address = 0;
    for (int part = 0; part < 4; part++) {
        if (part > 0 && *s++ != '.') return 0;
        const char *start = s;
        unsigned value = 0;
        while (*s >= '0' && *s <= '9') {
            value = value * 10 + (unsigned)(*s++ - '0');
            if (value > 255) return 0;
        }
        if (s == start || (s - start > 1 && *start == '0')) return 0; // no digit, or a leading zero
        address = address << 8 | value;
    }
    if (*s != 0) return 0;
    out->s_addr = htonl(address);
    return 1;
}

/// An address literal in its standard form ("127.0.0.1", "::1"), the commonest host a client
/// names: 1 with the address filled in. getaddrinfo gives the same address for these, at about 50
/// times the cost (5 900 instructions per connect, a fifth of a loopback round trip's); the forms
/// only it takes (IPv4's "127.1", a scoped IPv6 "fe80::1%eth0") and names are left to it.
static int literal_address(const char *host, uint16_t port, mp_socket_address_t *address) {
    struct sockaddr_in v4 = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (parse_ipv4(host, &v4.sin_addr)) {
        memcpy(address->bytes, &v4, sizeof v4);
        address->length = sizeof v4;
        return 1;
    }
    struct sockaddr_in6 v6 = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
    if (inet_pton(AF_INET6, host, &v6.sin6_addr) == 1) {
        memcpy(address->bytes, &v6, sizeof v6);
        address->length = sizeof v6;
        return 1;
    }
    return 0;
}

int32_t mp_resolve(const char *host, uint16_t port, int numeric_only, mp_socket_address_t *address) {
    if (literal_address(host, port, address)) return 0;
    struct addrinfo hints = {0}, *found = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | (numeric_only ? AI_NUMERICHOST : 0);
    char service[8];
    snprintf(service, sizeof service, "%u", (unsigned)port);
    int rc = getaddrinfo(host, service, &hints, &found);
    if (rc != 0) return rc < 0 ? rc : -rc;
    // SOCK_STREAM: IPv4 or IPv6 addresses only, which fit; anything else is refused, not cut.
    int fits = found->ai_addrlen <= sizeof address->bytes;
    if (fits) {
        memcpy(address->bytes, found->ai_addr, found->ai_addrlen);
        address->length = (uint32_t)found->ai_addrlen;
    }
    freeaddrinfo(found);
    return fits ? 0 : EAI_FAMILY;
}

const char *mp_resolve_error(int32_t code) { return gai_strerror(code); }

int32_t mp_tcp_socket(const mp_socket_address_t *address) {
    int family = sockaddr_of(address)->sa_family;
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
    return fd < 0 ? -errno : fd;
}

int32_t mp_tcp_listen(const mp_socket_address_t *address, int32_t backlog) {
    int fd = mp_tcp_socket(address);
    if (fd < 0) return fd;
    int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on); // a restarted server rebinds at once
    // Linux copies the listener's TCP_NODELAY into every socket it accepts: one call here instead
    // of one per connection (TCPConnection skips its own for accepted sockets).
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    if (bind(fd, sockaddr_of(address), address->length) != 0 || listen(fd, backlog) != 0) {
        int error = errno;
        close(fd);
        return -error;
    }
    return fd;
}

int32_t mp_tcp_nodelay(int32_t fd) {
    int on = 1;
    return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on) == 0 ? 0 : -errno;
}

int32_t mp_tcp_send_now(int32_t fd, const void *buffer, uint32_t length) {
    for (;;) {
        ssize_t n = send(fd, buffer, length, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n >= 0) return (int32_t)n; // length fits an int32_t's range by the caller's clamp
        if (errno != EINTR) return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
}

int32_t mp_socket_port(int32_t fd, int peer) {
    struct sockaddr_storage a;
    socklen_t n = sizeof a;
    int rc = peer ? getpeername(fd, (struct sockaddr *)&a, &n) : getsockname(fd, (struct sockaddr *)&a, &n);
    if (rc != 0) return -errno;
    if (a.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&a)->sin_port);
    if (a.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&a)->sin6_port);
    return -EAFNOSUPPORT;
}

int32_t mp_close(int32_t fd) {
    // Linux releases the descriptor even when close(2) reports EINTR: a retry could close another.
    return close(fd) == 0 || errno == EINTR ? 0 : -errno;
}

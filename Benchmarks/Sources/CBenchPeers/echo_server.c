// The loopback echo server of the sync-vs-async suite: one epoll thread in its own process, so the
// suite measures only the clients (threads, coroutines, tasks). Reads what a client sends and writes
// it back; a client's close ends its connection. Runs until the process is killed.
#define _GNU_SOURCE  // accept4
#include "CBenchPeers.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

int bench_echo_listen(int backlog, int *port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = 0};
    socklen_t len = sizeof addr;
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, backlog) < 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &len) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    *port = ntohs(addr.sin_port);
    return fd;
}

void bench_echo_serve(int listen_fd) {
    // Accept until EAGAIN on each readiness: the listener must not block.
    fcntl(listen_fd, F_SETFL, fcntl(listen_fd, F_GETFL) | O_NONBLOCK);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = listen_fd};
    epoll_ctl(ep, EPOLL_CTL_ADD, listen_fd, &ev);
    struct epoll_event events[256];
    char buffer[4096];
    for (;;) {
        int n = epoll_wait(ep, events, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == listen_fd) {
                int c;
                while ((c = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    int one = 1;
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                }
                continue;
            }
            ssize_t r = read(fd, buffer, sizeof buffer);
            if (r > 0) {
                // Loopback writes of a few bytes do not block; a short write would be the client's bug.
                (void)!write(fd, buffer, (size_t)r);
            } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                close(fd);  // closing removes it from the epoll set
            }
        }
    }
}

int bench_tcp_round_trip(int port, int bytes) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                               .sin_port = htons((uint16_t)port)};
    int one = 1, rc = 0;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char buffer[4096];
    memset(buffer, 'x', sizeof buffer);
    if (bytes > (int)sizeof buffer) bytes = (int)sizeof buffer;
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || write(fd, buffer, (size_t)bytes) != bytes) {
        rc = -errno;
    } else {
        for (int got = 0; got < bytes;) {
            ssize_t r = read(fd, buffer, (size_t)(bytes - got));
            if (r <= 0) { rc = r == 0 ? -ECONNRESET : -errno; break; }
            got += (int)r;
        }
    }
    close(fd);
    return rc;
}

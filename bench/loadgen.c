/* The bench's load generator: what a Python loop cannot do, saturate the kernel's packet path.
 *   loadgen udp-sink ADDR PORT SECS         count datagrams received; print "pkt/s"
 *   loadgen udp-flood ADDR PORT SECS SIZE   send datagrams as fast as the kernel takes them;
 *                                           print "sent seconds cpu_seconds user_seconds"
 *   loadgen udp-drop ADDR PORT SECS SIZE    the same, unconnected, to a port nobody listens
 *                                           on: every datagram is dropped (NO_SOCKET), and
 *                                           the ICMP errors never reach the socket
 *   loadgen rr-server ADDR PORT             TCP 1-byte echo of one connection; print "cpu_seconds"
 *   loadgen rr-client ADDR PORT SECS        TCP 1-byte request/response; print "transactions/s
 *                                           transactions cpu_seconds"
 * cpu_seconds is the process's own user + system time: on loopback and veth the whole receive
 * path runs as softirq in the sender's context and is charged to it, so work per CPU-second
 * reads the per-packet cost even when other jobs take CPU time from the run.
 * Only the addresses it is given: the bench gives loopback or its own namespaces' addresses. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_seconds(double *user)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    if (user)
        *user = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6;
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static int sock_for(const char *addr, int port, int type, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof(*ss));
    if (strchr(addr, ':')) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(port);
        inet_pton(AF_INET6, addr, &a->sin6_addr);
        *len = sizeof(*a);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        a->sin_family = AF_INET;
        a->sin_port = htons(port);
        inet_pton(AF_INET, addr, &a->sin_addr);
        *len = sizeof(*a);
    }
    int fd = socket(ss->ss_family, type, 0);
    if (fd < 0) {
        perror("socket");
        exit(1);
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    return fd;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: loadgen udp-sink|udp-flood|rr-server|rr-client ADDR PORT [SECS [SIZE]]\n");
        return 2;
    }
    const char *mode = argv[1], *addr = argv[2];
    int port = atoi(argv[3]);
    double secs = argc > 4 ? atof(argv[4]) : 0;
    struct sockaddr_storage ss;
    socklen_t len;
    char buf[65536];

    if (!strcmp(mode, "udp-sink")) {
        int fd = sock_for(addr, port, SOCK_DGRAM, &ss, &len);
        int rcvbuf = 8 << 20;
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
        if (bind(fd, (struct sockaddr *)&ss, len)) { perror("bind"); return 1; }
        struct timeval tv = {0, 200000};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        printf("ready\n");
        fflush(stdout);
        /* count from the first datagram, for `secs` */
        while (recv(fd, buf, sizeof(buf), 0) < 0)
            ;
        long n = 1;
        double t0 = now(), end = t0 + secs;
        while (now() < end) {
            if (recv(fd, buf, sizeof(buf), 0) > 0)
                n++;
        }
        printf("%.0f\n", n / (now() - t0));
        return 0;
    }
    if (!strcmp(mode, "udp-flood") || !strcmp(mode, "udp-drop")) {
        int size = argc > 5 ? atoi(argv[5]) : 64;
        int fd = sock_for(addr, port, SOCK_DGRAM, &ss, &len);
        int drop = !strcmp(mode, "udp-drop");
        if (!drop && connect(fd, (struct sockaddr *)&ss, len)) { perror("connect"); return 1; }
        double t0 = now(), end = t0 + secs, c0 = cpu_seconds(NULL), u0 = 0, u1 = 0;
        cpu_seconds(&u0);
        long n = 0;
        memset(buf, 'u', size);
        while (1) {
            for (int i = 0; i < 256; i++)
                if ((drop ? sendto(fd, buf, size, 0, (struct sockaddr *)&ss, len)
                          : send(fd, buf, size, 0)) > 0)
                    n++;
            if (now() > end)
                break;
        }
        double c1 = cpu_seconds(&u1);
        printf("%ld %.3f %.3f %.3f\n", n, now() - t0, c1 - c0, u1 - u0);
        return 0;
    }
    if (!strcmp(mode, "rr-server")) {
        int fd = sock_for(addr, port, SOCK_STREAM, &ss, &len);
        if (bind(fd, (struct sockaddr *)&ss, len) || listen(fd, 4)) { perror("bind"); return 1; }
        printf("ready\n");
        fflush(stdout);
        int c = accept(fd, NULL, NULL);
        if (c < 0)
            return 1;
        int one = 1;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        double c0 = cpu_seconds(NULL);
        while (recv(c, buf, 1, 0) == 1)
            if (send(c, buf, 1, 0) != 1)
                break;
        printf("%.3f\n", cpu_seconds(NULL) - c0);
        return 0;
    }
    if (!strcmp(mode, "rr-client")) {
        int fd = sock_for(addr, port, SOCK_STREAM, &ss, &len);
        if (connect(fd, (struct sockaddr *)&ss, len)) { perror("connect"); return 1; }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        long n = 0;
        double t0 = now(), end = t0 + secs, c0 = cpu_seconds(NULL);
        while (now() < end) {
            for (int i = 0; i < 64; i++) {
                if (send(fd, "r", 1, 0) != 1 || recv(fd, buf, 1, 0) != 1)
                    return 1;
                n++;
            }
        }
        printf("%.0f %ld %.3f\n", n / (now() - t0), n, cpu_seconds(NULL) - c0);
        return 0;
    }
    fprintf(stderr, "loadgen: unknown mode %s\n", mode);
    return 2;
}

/* Listening sockets and the access-log reopen, through real sockets with 3 loops:
 * krait_server_listen_unix (mode, a stale socket removed, a live one or a plain file refused,
 * the file removed at the end unless the path was taken since), krait_server_listen_fd (an
 * inherited listener, as systemd's socket activation hands over; a non-listening one
 * refused) and krait_server_swap_access_log while the loops run (every line in exactly one
 * file, whole; the lines after the swap in the new one). Built under ASan+UBSan, and under
 * TSan by scripts/test. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "loops_harness.h"

#define CLIENTS 4
#define CONNS_EACH 10
#define REQS_EACH 3

static char dir[] = "/tmp/krait-listen-XXXXXX";
static char sock_path[300];
static int tcp_port;
static int bad;
static pthread_mutex_t bad_lock = PTHREAD_MUTEX_INITIALIZER;

static void path_in(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", dir, name);
}

static struct sockaddr_un unix_addr(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = strlen(path);
    if (n < sizeof sa.sun_path)
        memcpy(sa.sun_path, path, n + 1);
    return sa;
}

static int unix_connect(const char *path)
{
    struct sockaddr_un sa = unix_addr(path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int tcp_connect(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* REQS_EACH keep-alive requests on one connection, each answered 200 with the file. */
static int exchange(int fd, int batch, int n)
{
    char req[256], buf[8192];
    for (int r = 0; r < REQS_EACH; r++) {
        int len = snprintf(req, sizeof req,
                           "GET /index.html?b=%d&n=%d HTTP/1.1\r\nHost: x\r\n\r\n", batch, n);
        if (send(fd, req, (size_t)len, MSG_NOSIGNAL) != len)
            return -1;
        size_t got = 0;
        for (;;) {
            ssize_t k = recv(fd, buf + got, sizeof buf - 1 - got, 0);
            if (k <= 0)
                return -1;
            got += (size_t)k;
            buf[got] = '\0';
            char *end = strstr(buf, "\r\n\r\n");
            char *cl = strcasestr(buf, "\r\ncontent-length:");
            if (end && cl && got >= (size_t)(end + 4 - buf) + (size_t)strtol(cl + 17, NULL, 10))
                break;
        }
        if (strncmp(buf, "HTTP/1.1 200", 12) != 0 || !strstr(buf, "hello"))
            return -1;
    }
    return 0;
}

struct job { int batch, client; };

static void *client(void *arg)
{
    struct job *j = arg;
    for (int i = 0; i < CONNS_EACH; i++) {
        /* Half the connections through the Unix socket, half through the inherited one. */
        int use_unix = (i + j->client) % 2 == 0;
        int fd = use_unix ? unix_connect(sock_path) : tcp_connect(tcp_port);
        struct timeval tv = {.tv_sec = 10};
        if (fd >= 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        if (fd < 0 || exchange(fd, j->batch, j->client * 100 + i) < 0) {
            pthread_mutex_lock(&bad_lock);
            bad++;
            pthread_mutex_unlock(&bad_lock);
        }
        if (fd >= 0)
            close(fd);
    }
    return NULL;
}

static void run_batch(int batch)
{
    pthread_t t[CLIENTS];
    struct job jobs[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) {
        jobs[i] = (struct job){batch, i};
        pthread_create(&t[i], NULL, client, &jobs[i]);
    }
    for (int i = 0; i < CLIENTS; i++)
        pthread_join(t[i], NULL);
}

/* Lines of a log: how many, how many of each batch, how many whole, how many from "unix". */
struct counts { int lines, b1, b2, whole, unix_peer; };

static struct counts count_log(const char *path)
{
    struct counts c = {0};
    FILE *f = fopen(path, "r");
    char line[2048];
    while (f && fgets(line, sizeof line, f)) {
        c.lines++;
        c.b1 += strstr(line, "?b=1&") != NULL;
        c.b2 += strstr(line, "?b=2&") != NULL;
        char *g = strstr(line, "\"GET /index.html?b=");
        c.whole += g && strchr(line, '\n') && !strstr(g + 1, "\"GET ") &&
                   strstr(line, " HTTP/1.1\" 200 ");
        c.unix_peer += strncmp(line, "unix - - [", 10) == 0;
    }
    if (f)
        fclose(f);
    return c;
}

static void test_refusals(krait_server *srv)
{
    char err[512] = "", path[400];
    char longpath[200];
    memset(longpath, 'a', sizeof longpath - 1);
    longpath[0] = '/';
    longpath[sizeof longpath - 1] = '\0';
    ok(krait_server_listen_unix(srv, longpath, 0660, err, sizeof err) == KRAIT_EINVAL &&
           strstr(err, "at most 107"),
       "a path too long for sun_path: %s", err);
    ok(krait_server_listen_unix(srv, "", 0660, err, sizeof err) == KRAIT_EINVAL, "no path");

    /* A plain file is never removed. */
    path_in(path, sizeof path, "plain");
    write_file(path, "keep me");
    err[0] = '\0';
    ok(krait_server_listen_unix(srv, path, 0660, err, sizeof err) == KRAIT_EINVAL &&
           strstr(err, "not a socket"),
       "a plain file refused: %s", err);
    struct stat st;
    ok(stat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 7, "the file is kept");
    unlink(path);

    /* A socket something listens on is live: refused, left alone. */
    path_in(path, sizeof path, "live.sock");
    struct sockaddr_un sa = unix_addr(path);
    int live = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ok(bind(live, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(live, 4) == 0, "live");
    err[0] = '\0';
    ok(krait_server_listen_unix(srv, path, 0660, err, sizeof err) == KRAIT_EINVAL &&
           strstr(err, "another server"),
       "a live socket refused: %s", err);
    ok(stat(path, &st) == 0 && S_ISSOCK(st.st_mode), "the live socket is kept");
    int cl = unix_connect(path);
    ok(cl >= 0, "and still answers");
    if (cl >= 0)
        close(cl);
    close(live);
    unlink(path);

    /* Descriptors that are not listening stream sockets. */
    int notsock = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ok(krait_server_listen_fd(srv, notsock, 0, err, sizeof err) == KRAIT_EINVAL,
       "a file is not a listener: %s", err);
    close(notsock);
    int unbound = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ok(krait_server_listen_fd(srv, unbound, 0, err, sizeof err) == KRAIT_EINVAL,
       "a socket that does not listen is refused");
    close(unbound);
    int dgram = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ok(krait_server_listen_fd(srv, dgram, 0, err, sizeof err) == KRAIT_EINVAL,
       "a datagram socket is refused");
    close(dgram);
    ok(krait_server_listen_fd(srv, dgram, 1, err, sizeof err) == KRAIT_EINVAL,
       "TLS without a certificate is refused");
}

int main(void)
{
    ok(mkdtemp(dir) != NULL, "mkdtemp");
    char path[400];
    path_in(path, sizeof path, "index.html");
    write_file(path, "hello\n");
    char err[512] = "";
    krait_server *srv = site_server(dir, err, sizeof err);
    if (!srv)
        return done();
    ok(krait_server_set_loops(srv, 3) == KRAIT_OK, "3 loops");
    test_refusals(srv);

    /* A stale socket (its server gone without removing it) is replaced. */
    path_in(sock_path, sizeof sock_path, "krait.sock");
    struct sockaddr_un sa = unix_addr(sock_path);
    int stale = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ok(bind(stale, (struct sockaddr *)&sa, sizeof sa) == 0, "stale socket");
    close(stale);
    ok(krait_server_listen_unix(srv, sock_path, 0660, err, sizeof err) == 0, "unix: %s", err);
    struct stat st;
    ok(stat(sock_path, &st) == 0 && S_ISSOCK(st.st_mode) && (st.st_mode & 0777) == 0660,
       "mode 0660: %o", (unsigned)(st.st_mode & 0777));
    char other[400];
    path_in(other, sizeof other, "private.sock");
    ok(krait_server_listen_unix(srv, other, 0600, err, sizeof err) == 0, "unix 0600: %s", err);
    ok(stat(other, &st) == 0 && (st.st_mode & 0777) == 0600, "mode 0600: %o",
       (unsigned)(st.st_mode & 0777));

    /* An inherited listener (socket activation). */
    int inherited = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in in = {.sin_family = AF_INET};
    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof in;
    ok(bind(inherited, (struct sockaddr *)&in, sizeof in) == 0 && listen(inherited, 64) == 0 &&
           getsockname(inherited, (struct sockaddr *)&in, &sl) == 0,
       "inherited listener");
    fcntl(inherited, F_SETFD, 0);  /* as an exec'd process gets it */
    tcp_port = krait_server_listen_fd(srv, inherited, 0, err, sizeof err);
    ok(tcp_port == ntohs(in.sin_port), "listen_fd returns the port: %d", tcp_port);
    ok((fcntl(inherited, F_GETFL) & O_NONBLOCK) && (fcntl(inherited, F_GETFD) & FD_CLOEXEC),
       "made non-blocking and close-on-exec");

    char log1[400], log2[400];
    path_in(log1, sizeof log1, "access.log");
    path_in(log2, sizeof log2, "access.log.new");
    int fd1 = open(log1, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    ok(krait_server_swap_access_log(srv, fd1) == KRAIT_EINVAL, "no swap while the log is off");
    krait_server_set_access_log(srv, fd1);

    pthread_t run;
    pthread_create(&run, NULL, runner, srv);
    run_batch(1);
    /* Every line of the first batch is written before the swap (each loop writes its lines
     * at the end of the turn that answered them): wait for them, then swap. */
    int want = CLIENTS * CONNS_EACH * REQS_EACH;
    for (int i = 0; i < 500 && count_log(log1).lines < want; i++)
        usleep(10000);
    int fd2 = open(log2, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    ok(krait_server_swap_access_log(srv, -1) == KRAIT_EINVAL, "no swap to -1");
    ok(krait_server_swap_access_log(srv, fd2) == fd1, "the swap returns the old descriptor");
    close(fd1);  /* the caller's to close at once: no loop writes to it any more */
    run_batch(2);
    krait_server_stop(srv);
    pthread_join(run, NULL);
    ok(bad == 0, "every connection got its answers (%d did not)", bad);

    struct counts a = count_log(log1), b = count_log(log2);
    ok(a.lines == want && a.b1 == want && a.whole == want, "old log: %d lines, %d of batch 1, "
       "%d whole", a.lines, a.b1, a.whole);
    ok(b.lines == want && b.b2 == want && b.whole == want, "new log: %d lines, %d of batch 2, "
       "%d whole", b.lines, b.b2, b.whole);
    ok(a.unix_peer == want / 2 && b.unix_peer == want / 2, "unix peers: %d and %d",
       a.unix_peer, b.unix_peer);
    int64_t accepted[3];
    for (int i = 0; i < 3; i++)
        accepted[i] = krait_server_loop_stat(srv, i, KRAIT_STAT_CONNS);
    ok(accepted[0] + accepted[1] + accepted[2] == 2 * CLIENTS * CONNS_EACH,
       "accepted %lld %lld %lld", (long long)accepted[0], (long long)accepted[1],
       (long long)accepted[2]);
    krait_server_free(srv);
    close(fd2);
    ok(stat(sock_path, &st) < 0 && errno == ENOENT, "the socket file is removed at the end");
    ok(stat(other, &st) < 0 && errno == ENOENT, "both of them");

    /* A path taken by something else meanwhile is left alone. */
    srv = krait_server_new(dir, err, sizeof err);
    ok(srv && krait_server_listen_unix(srv, sock_path, 0660, err, sizeof err) == 0,
       "listen again: %s", err);
    unlink(sock_path);
    write_file(sock_path, "someone else's");
    krait_server_free(srv);
    ok(stat(sock_path, &st) == 0 && S_ISREG(st.st_mode), "another file at the path is kept");

    unlink(sock_path);
    unlink(log1);
    unlink(log2);
    path_in(path, sizeof path, "index.html");
    unlink(path);
    rmdir(dir);
    return done();
}

#!/usr/bin/env python3
"""Static files: krait against nginx, both with one worker / one loop thread.

Creates a temporary site with a 1 KiB and a 1 MiB file, starts ``krait --workers 1
--access-log off`` and nginx (1 worker process, sendfile on, tcp_nopush on, access_log off) on
127.0.0.1, and loads both with wrk over keep-alive connections. For every (file, connection
count) the servers take turns: krait, nginx, krait, nginx, ... Prints requests/s, throughput and
the ratio krait/nginx, as a Markdown table, and writes every run to a JSON file.

Run by hand (never from CI): ``python bench/static.py`` (about 5 minutes with the defaults).
wrk runs on the same machine and shares its CPUs with the server under test.

With ``--https`` both servers speak HTTPS only, with the same throwaway certificate (ECDSA P-256,
or RSA-2048 with ``--key-type rsa``), TLS 1.2 and 1.3, krait's TLS 1.2 cipher list, server
preference, OpenSSL's session cache and kTLS asked for (``SSL_OP_ENABLE_KTLS``; nginx:
``ssl_conf_command Options KTLS``). Before measuring, the driver proves the TLS side alike: what
a default OpenSSL client (as wrk) negotiates with each, and which protocols and suites each
accepts (``openssl s_client``); and it records whether the kernel can do kTLS at all.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import HOST, Server, Servers, log  # noqa: E402

NGINX = "/usr/sbin/nginx"

NGINX_CONF = """\
# Written by bench/static.py for one benchmark run.
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000000;
    keepalive_timeout 65s;
    default_type application/octet-stream;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen {host}:{port};
        root {root};
    }}
}}
"""

# What --https adds to NGINX_CONF's server block: the settings krait's core hard-codes
# (native/src/tls.c: TLS 1.2-1.3, this cipher list, server preference, OpenSSL's internal session
# cache, SSL_OP_ENABLE_KTLS). TLS 1.3 suites, key-exchange groups and session tickets are
# OpenSSL's defaults on both sides.
KRAIT_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!MD5:!DSS"
NGINX_TLS = """\
        listen {host}:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers {ciphers};
        ssl_prefer_server_ciphers on;
        ssl_session_cache builtin;
        ssl_session_tickets on;
        ssl_conf_command Options KTLS;
"""

KRAIT_INIT = """\
# Written by bench/static.py --https for one benchmark run.
import krait

krait.config.ssl_certificate_path = {cert!r}
krait.config.ssl_private_key_path = {key!r}
"""

FILES = {"1KiB": ("/1k.bin", 1024), "1MiB": ("/1m.bin", 1024 * 1024)}


def make_site(root: Path) -> dict[str, bytes]:
    root.mkdir(mode=0o755)
    # nginx's worker drops root privileges: the site must be world-readable.
    os.chmod(root.parent, 0o755)
    contents = {}
    for name, (path, size) in FILES.items():
        data = os.urandom(size)
        (root / path.lstrip("/")).write_bytes(data)
        os.chmod(root / path.lstrip("/"), 0o644)
        contents[name] = data
    return contents


def nginx_conf(prefix: Path, port: int, root: Path,
               tls: tuple[Path, Path] | None = None) -> str:
    """NGINX_CONF; with ``tls`` (certificate, key) its listen line becomes NGINX_TLS."""
    conf = NGINX_CONF.format(prefix=prefix, host=HOST, port=port, root=root)
    if tls is not None:
        listen = f"        listen {HOST}:{port};\n"
        assert conf.count(listen) == 1
        conf = conf.replace(listen, NGINX_TLS.format(host=HOST, port=port, cert=tls[0],
                                                     key=tls[1], ciphers=KRAIT_TLS12_CIPHERS))
    return conf


def check_tls(servers: list[Server], info: dict[str, str]) -> None:
    """Record, for each HTTPS server, what a default OpenSSL client negotiates and what the
    server accepts; with two servers, stop unless both are alike."""
    seen: dict[str, tuple[tuple[str, ...], dict[str, list[str]]]] = {}
    for server in servers:
        assert server.tls_ca is not None
        probe = common.tls_probe(server.port, server.tls_ca)
        if not probe or probe.get("Verification") != "OK":
            raise RuntimeError(f"{server.name}: TLS handshake or verification failed: {probe}")
        tls12 = common.tls_probe(server.port, server.tls_ca, "-tls1_2")
        negotiated = tuple(probe.get(k, "?") for k in (
            "Protocol version", "Ciphersuite", "Server Temp Key", "Signature type",
            "Peer certificate"))
        negotiated_12 = (tls12.get("Protocol version", "refused") + " " +
                         tls12.get("Ciphersuite", "")).strip()
        accepted = common.tls_accepted(server.port, server.tls_ca)
        seen[server.name] = (negotiated + (negotiated_12,), accepted)
        line = (f"{negotiated[0]} {negotiated[1]}, key exchange {negotiated[2]}, signature "
                f"{negotiated[3]}, certificate {negotiated[4]}; a TLS 1.2-only client gets "
                f"{negotiated_12}; accepts {' '.join(accepted['protocols'])}, TLS 1.2 suites "
                f"{':'.join(accepted['TLSv1.2 suites'])}, TLS 1.3 suites "
                f"{':'.join(accepted['TLSv1.3 suites'])}")
        info[f"tls {server.name}"] = line
        server.notes = line
        log(f"  {server.name} TLS: {line}")
    if len(set(map(repr, seen.values()))) > 1:
        raise RuntimeError("the servers' TLS settings differ (see above): not a like-for-like "
                           "comparison")


def main(argv: list[str]) -> int:
    p = common.driver_parser(__doc__)
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run (10)")
    p.add_argument("--rounds", type=int, default=3,
                   help="runs per server and configuration, alternating servers (3)")
    p.add_argument("--warmup", type=int, default=2,
                   help="seconds of unmeasured load per server before each configuration (2)")
    p.add_argument("--connections", type=common.positive_ints, default=[50, 256],
                   help="comma-separated connection counts (50,256)")
    p.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    p.add_argument("--sizes", default="1KiB,1MiB", help="files to load: 1KiB,1MiB")
    p.add_argument("--only", choices=["krait", "nginx"], help="run one server only")
    p.add_argument("--https", action="store_true",
                   help="both servers over HTTPS with the same certificate and TLS settings")
    p.add_argument("--key-type", choices=["ec", "rsa"], default="ec",
                   help="with --https: ECDSA P-256 (ec, the default) or RSA-2048 (rsa) keys")
    p.add_argument("--json", type=Path,
                   help="where to write every run (bench/results/static.json; with --https "
                   "bench/results/static-https.json)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--report", type=Path, metavar="JSON",
                   help="only print the tables of an earlier run's results file")
    common.add_quiet_arguments(p)
    args = p.parse_args(argv)
    if args.report:
        payload, results = common.load_results(args.report, args)
        common.print_machine(payload["machine"])
        print(report(results, args))
        return 0
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    if args.json is None:
        args.json = common.BENCH_DIR / "results" / (
            "static-https.json" if args.https else "static.json")
    sizes = [s for s in args.sizes.split(",") if s]
    for s in sizes:
        if s not in FILES:
            p.error(f"unknown size {s!r}")

    common.require(common.WRK, "apt-get install wrk")
    common.require(NGINX, "apt-get install nginx")
    if args.https:
        common.require(common.OPENSSL, "apt-get install openssl")
    info = common.machine_info()
    info["nginx"] = common.command_version([NGINX, "-v"], r"nginx version: (\S+)")
    if args.https:
        info["openssl"] = common.command_version([common.OPENSSL, "version"])
        info["kernel TLS"] = common.ktls_kernel()
    for k, v in info.items():
        log(f"{k:>8}: {v}")

    tmp = Path(tempfile.mkdtemp(prefix="krait-bench-static-"))
    root = tmp / "site"
    contents = make_site(root)
    servers: list[Server] = []
    kport, nport = common.free_port(), common.free_port()
    tls: tuple[Path, Path] | None = None
    ca: str | None = None
    if args.https:
        ca_path, cert, key = common.make_certificates(tmp / "tls", args.key_type)
        ca, tls = str(ca_path), (cert, key)
        info["certificate"] = common.certificate_summary(cert)
        log(f"certificate: {info['certificate']}")
    if args.only != "nginx":
        # HTTPS: the certificate comes from the site's .py/init.py; --port /N is HTTPS only.
        port_arg = str(kport)
        if tls is not None:
            (root / ".py").mkdir()
            (root / ".py" / "init.py").write_text(KRAIT_INIT.format(cert=str(tls[0]),
                                                                    key=str(tls[1])))
            port_arg = f"/{kport}"
        servers.append(Server(
            "krait", [sys.executable, "-m", "krait", str(root), "--host", HOST,
                      "--port", port_arg, "--workers", "1", "--access-log", "off"],
            kport, cwd=str(tmp), log_path=str(tmp / "krait.log"), version=info["krait"],
            tls_ca=ca))
    if args.only != "krait":
        prefix = tmp / "nginx"
        prefix.mkdir()
        conf = prefix / "nginx.conf"
        conf.write_text(nginx_conf(prefix, nport, root, tls))
        servers.append(Server(
            "nginx", [NGINX, "-c", str(conf), "-p", str(prefix), "-g", "daemon off;"],
            nport, cwd=str(tmp), log_path=str(prefix / "stderr.log"), version=info["nginx"],
            stop_signal=15, tls_ca=ca))

    tests = [(s, FILES[s][0]) for s in sizes]
    started = time.monotonic()
    try:
        with Servers() as running:
            for server in servers:
                ktls0 = common.ktls_counters()
                running.start(server, FILES["1KiB"][0])
                for name, (path, _) in FILES.items():
                    common.check_response(server, path, contents[name])
                if tls is not None:
                    info[f"kTLS during the {server.name} checks"] = common.ktls_delta(
                        ktls0, common.ktls_counters())
            if tls is not None:
                check_tls(servers, info)
            ktls0 = common.ktls_counters()
            results = common.run_matrix(servers, tests, args.connections, args.threads,
                                        args.duration, args.rounds, args.warmup,
                                        common.quiet_from_args(args))
            if tls is not None:
                info["kTLS during the runs"] = common.ktls_delta(ktls0, common.ktls_counters())
    finally:
        common.remove_tmp(tmp, args.keep)
    common.runs_done(info, started)

    payload = common.results_payload(info, ["python", "bench/static.py", *argv], servers, results,
                                     args)
    if tls is not None:
        common.print_machine({k: v for k, v in info.items() if "TLS" in k or "tls" in k
                              or k in ("certificate", "openssl")})
    common.write_json(args.json, payload)
    print(report(results, args))
    return 0


def report(results: list[common.WrkResult], args: argparse.Namespace) -> str:
    summaries = common.summarize(results, args.max_other)
    by_key = {(s.test, s.connections, s.server): s for s in summaries}
    rows = []
    for s in summaries:
        ref = by_key.get((s.test, s.connections, "nginx"))
        ratio_rps = ratio_tp = "–"
        if ref is not None and s.server != "nginx":
            ratio_rps = f"{s.rps_mean / ref.rps_mean:.2f}"
            ratio_tp = f"{s.mib_mean / ref.mib_mean:.2f}"
        rows.append([s.test, str(s.connections), s.server,
                     common.fmt_range(s.rps, ",.0f"), common.fmt_range(s.mib_s, ",.1f"),
                     f"{sum(s.cpu) / len(s.cpu):.2f}", f"{statistics.fmean(s.cpu_us):.1f}",
                     s.runs_used, f"{max(s.other):.2f}",
                     f"{sum(s.p99) / len(s.p99):.2f}", str(s.errors), ratio_rps, ratio_tp])
    header = ["file", "conns", "server", "requests/s mean (min–max)", "MiB/s mean (min–max)",
              "server CPU cores", "server CPU µs/req", "clean runs", "others' CPU max",
              "p99 ms", "errors",
              "krait/nginx req/s", "krait/nginx MiB/s"]
    title = (f"wrk -t{args.threads}, {args.duration:g} s per run, {args.rounds} rounds "
             f"alternating servers, keep-alive" + (", HTTPS" if getattr(args, "https", False)
                                                   else ""))
    return f"\n{title}\n\n" + common.markdown_table(header, rows) + "\n"


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        log("interrupted; servers stopped")
        sys.exit(130)

"""TLS on secureClientPort with ZooKeeper's ssl.* keys (PEM key and trust stores):
kazoo's TLS mode and zkCli (Netty, -Dzookeeper.client.secure=true) connect; the
client certificate is the connection's x509 ACL id; ssl.clientAuth decides whether a
client without a trusted certificate gets in; a bad setting stops start-up with the
key that names it."""

import ssl
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError
from kazoo.security import ACL, Id

import servers


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=d)


def make_cert(d, ca, name, subject, san=None):
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", f"{name}.key",
            "-out", f"{name}.csr", cwd=d)
    ext = Path(d) / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\n" if san else "basicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-days", "2", "-extfile", str(ext), "-out", f"{name}.pem", cwd=d)
    # ZooKeeper's PEM key store: the key and the certificate in one file.
    (Path(d) / f"{name}.both.pem").write_text((Path(d) / f"{name}.key").read_text()
                                              + (Path(d) / f"{name}.pem").read_text())


@pytest.fixture(scope="module")
def certs():
    d = tempfile.TemporaryDirectory(prefix="rk-tls-")
    make_ca(d.name, "ca")
    make_ca(d.name, "otherca")
    make_cert(d.name, "ca", "server", "/CN=localhost", san="IP:127.0.0.1,DNS:localhost")
    make_cert(d.name, "ca", "client1", "/O=Example/CN=client1")
    make_cert(d.name, "ca", "client2", "/O=Example/CN=client2")
    make_cert(d.name, "ca", "admin", "/O=Example/CN=admin")
    make_cert(d.name, "otherca", "stranger", "/CN=stranger")
    yield Path(d.name)
    d.cleanup()


def tls_server(certs, **extra):
    port = servers.free_port()
    cfg = {"secureClientPort": str(port), "secureClientPortAddress": "127.0.0.1",
           "serverCnxnFactory": "org.apache.zookeeper.server.NettyServerCnxnFactory",
           "ssl.keyStore.location": str(certs / "server.both.pem"), "ssl.keyStore.type": "PEM",
           "ssl.trustStore.location": str(certs / "ca.pem"), "ssl.trustStore.type": "PEM",
           "X509AuthenticationProvider.superUser": "CN=admin,O=Example"}
    cfg.update(extra)
    s = servers.start_ringkeeper(cfg)
    s.secure_port = port
    return s


def tls_client(certs, port, name="client1", ca="ca"):
    kw = {"certfile": str(certs / f"{name}.pem"), "keyfile": str(certs / f"{name}.key")} if name else {}
    zk = KazooClient(hosts=f"127.0.0.1:{port}", use_ssl=True, verify_certs=True, ca=str(certs / f"{ca}.pem"),
                     timeout=10, **kw)
    zk.start(timeout=10)
    return zk


def test_kazoo_over_tls_with_the_certificate_as_x509_id(certs):
    srv = tls_server(certs)
    try:
        one = tls_client(certs, srv.secure_port, "client1")
        one.create("/mine", b"secret", acl=[ACL(31, Id("x509", "CN=client1,O=Example"))])
        assert one.get("/mine")[0] == b"secret"
        # Another certificate of the same CA, and a plain client: not client1.
        two = tls_client(certs, srv.secure_port, "client2")
        with pytest.raises(NoAuthError):
            two.get("/mine")
        plain = KazooClient(hosts=srv.hosts)
        plain.start()
        with pytest.raises(NoAuthError):
            plain.get("/mine")
        # X509AuthenticationProvider.superUser's certificate is super.
        admin = tls_client(certs, srv.secure_port, "admin")
        assert admin.get("/mine")[0] == b"secret"
        # Both ports serve the same tree.
        plain.create("/both", b"x")
        assert one.get("/both")[0] == b"x"
        for c in (one, two, plain, admin):
            c.stop()
    finally:
        srv.stop()


def handshake(certs, port, name):
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    if name:
        ctx.load_cert_chain(str(certs / f"{name}.pem"), str(certs / f"{name}.key"))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(b"ruok")
            return s.recv(10)


def test_client_auth_need_want_none(certs):
    srv = tls_server(certs)  # ssl.clientAuth defaults to need, as in ZooKeeper
    try:
        assert handshake(certs, srv.secure_port, "client1") == b"imok"
        for name in (None, "stranger"):
            with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
                handshake(certs, srv.secure_port, name)
        # The server goes on serving, over TLS and without.
        assert handshake(certs, srv.secure_port, "client2") == b"imok"
        assert srv.four("ruok") == "imok"
        assert "TLS handshake with" in srv.log_text
    finally:
        srv.stop()
    srv = tls_server(certs, **{"ssl.clientAuth": "want"})
    try:
        assert handshake(certs, srv.secure_port, None) == b"imok"
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            handshake(certs, srv.secure_port, "stranger")
    finally:
        srv.stop()
    srv = tls_server(certs, **{"ssl.clientAuth": "none"})
    try:
        assert handshake(certs, srv.secure_port, None) == b"imok"
    finally:
        srv.stop()


def test_zkcli_connects_with_zookeeper_client_secure(certs):
    srv = tls_server(certs)
    try:
        jars = [servers.ZOOKEEPER_JAR] + sorted(Path("/usr/share/java").glob("netty-*[a-z].jar")) + \
            [j for j in servers.LOG_JARS if j.exists()]
        assert all(j.exists() for j in jars), jars
        props = ["-Dzookeeper.client.secure=true",
                 "-Dzookeeper.clientCnxnSocket=org.apache.zookeeper.ClientCnxnSocketNetty",
                 f"-Dzookeeper.ssl.keyStore.location={certs / 'client1.both.pem'}",
                 "-Dzookeeper.ssl.keyStore.type=PEM",
                 f"-Dzookeeper.ssl.trustStore.location={certs / 'ca.pem'}",
                 "-Dzookeeper.ssl.trustStore.type=PEM"]
        script = "create /fromzkcli over-tls\nget /fromzkcli\nwhoami\nquit\n"
        p = subprocess.run(["java", *props, "-cp", ":".join(map(str, jars)), "org.apache.zookeeper.ZooKeeperMain",
                            "-server", f"127.0.0.1:{srv.secure_port}"], input=script, capture_output=True, text=True,
                           timeout=120)
        out = p.stdout + p.stderr
        assert "Created /fromzkcli" in out and "\nover-tls\n" in p.stdout, out[-3000:]
        assert "x509" in p.stdout and "CN=client1,O=Example" in p.stdout, p.stdout[-2000:]
    finally:
        srv.stop()


def run_bin(args):
    return subprocess.run([str(servers.RINGKEEPER_BIN)] + args, capture_output=True, text=True, timeout=20)


def test_bad_tls_settings_stop_start_up_naming_the_key(certs):
    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "zoo.cfg"
        base = f"dataDir={d}\nclientPort={servers.free_port()}\nclientPortAddress=127.0.0.1\n" \
               f"admin.enableServer=false\nsecureClientPort={servers.free_port()}\n"
        cases = [
            ("ssl.keyStore.type=JKS\n", "ssl.keyStore.type"),
            (f"ssl.keyStore.location={d}/missing.pem\n", "missing.pem"),
            ("", "ssl.keyStore.location"),
            (f"ssl.keyStore.location={certs / 'server.both.pem'}\n", "ssl.trustStore.location"),
            (f"ssl.keyStore.location={certs / 'server.pem'}\nssl.clientAuth=none\n", "no private key"),
            (f"ssl.keyStore.location={certs / 'server.both.pem'}\nssl.clientAuth=none\nssl.enabledProtocols=SSLv3\n",
             "SSLv3"),
            ("ssl.clientAuth=sometimes\n", "ssl.clientAuth"),
            ("sslQuorum=true\n", "sslQuorum"),
        ]
        for extra, named in cases:
            cfg.write_text(base + extra)
            p = run_bin(["--config", str(cfg)])
            assert p.returncode != 0 and named in p.stderr, (extra, p.stderr)
        # An encrypted key is refused with how to decrypt it.
        openssl("pkey", "-in", str(certs / "server.key"), "-aes256", "-passout", "pass:pw", "-out", "enc.key", cwd=d)
        (Path(d) / "enc.both.pem").write_text((Path(d) / "enc.key").read_text() + (certs / "server.pem").read_text())
        cfg.write_text(base + f"ssl.keyStore.location={d}/enc.both.pem\nssl.keyStore.password=pw\nssl.clientAuth=none\n")
        p = run_bin(["--config", str(cfg)])
        assert p.returncode != 0 and "encrypted" in p.stderr, p.stderr

"""redis-py against a peercache node (tests/resp/tools.rs runs it): the client's
default protocol (RESP3 from redis-py 8 on) and protocol=2, single commands, a
pipeline and MGET. Exits non-zero with the failed assertion's message."""
import sys

import redis

port = int(sys.argv[1])
for kwargs in ({}, {"protocol": 2}):
    r = redis.Redis(host="127.0.0.1", port=port, **kwargs)
    hello = r.execute_command("HELLO")
    want = kwargs.get("protocol", 3)
    proto = hello[b"proto"] if isinstance(hello, dict) else dict(zip(hello[::2], hello[1::2]))[b"proto"]
    assert proto == want, f"protocol {proto}, wanted {want}: {hello!r}"
    assert r.ping() is True
    assert r.set("py", "v") is True
    assert r.get("py") == b"v"
    assert r.get("py-missing") is None
    p = r.pipeline(transaction=False)
    p.set("a", "1", ex=60).get("a").mget(["a", "py", "py-missing"]).exists("a", "py-missing").ttl("a")
    got = p.execute()
    assert got[:4] == [True, b"1", [b"1", b"v", None], 1], got
    assert 55 <= got[4] <= 60, got
    assert r.delete("a") == 1
    assert r.mget("a", "py") == [None, b"v"]
    info = r.info()
    assert "redis_version" in info and "keyspace_hits" in info, info
    assert r.client_setname("tester") is True and r.client_getname() in ("tester", b"tester")
    print(f"redis-py {redis.__version__} protocol {want}: ok")

import psycopg, redis
def test_pg(pg_dsn):
    with psycopg.connect(pg_dsn) as c:
        assert c.execute("select extversion from pg_extension where extname='vector'").fetchone()[0]
def test_redis(redis_url):
    r = redis.Redis.from_url(redis_url); r.set("a", "1"); assert r.get("a") == b"1"

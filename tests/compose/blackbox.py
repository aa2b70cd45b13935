#!/usr/bin/env python3
"""A black-box run against the compose stack's published ports (scripts/compose.sh test).

Nothing here comes from the service's code: plain HTTP, JSON parsed strictly, tokens minted with
the standard library from the stack's secret file (as an identity provider would), Prometheus'
own API, and `docker kill` for the fault. Exits non-zero on the first broken promise.

1. The cap: 1,000 users apply at once across the replicas for 100 coupons. Exactly 100 are told
   202, at positions 1..100; every other one is told SOLD_OUT; every winner reads ISSUED at the
   position told; the persisted rows are exactly those 100 users at those positions.
2. The fairness log: `fcfs-coupon verify` with the pinned verifier key passes.
3. Operations: Prometheus scrapes every replica, has the project's rules loaded, no alert fires.
4. Redis is SIGKILLed while a crowd applies, and restarted: every acknowledged winner ends ISSUED
   at the position told, no position is told twice, and the event still sells out exactly.
"""

import argparse
import os
import base64
import hashlib
import hmac
import json
import random
import shlex
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

TIMEOUT = 30


def fail(message):
    """Ends the run from any thread (sys.exit would end only the calling thread)."""
    print(f"[blackbox] FAILED: {message}", file=sys.stderr, flush=True)
    os._exit(1)


def say(message):
    print(f"[blackbox] {message}", file=sys.stderr, flush=True)


def check(condition, message):
    if not condition:
        fail(message)


def strict_json(text):
    """JSON with no duplicate keys, no NaN: what a strict client accepts."""

    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            raise ValueError(f"duplicate keys in {keys}")
        return dict(pairs)

    def no_constants(name):
        raise ValueError(f"non-JSON constant {name}")

    return json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constants)


def request(method, url, token=None, body=None):
    """(status, headers, parsed body) for one request; JSON bodies are parsed strictly and must
    say so in their content type."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            status, headers, raw = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        status, headers, raw = e.code, e.headers, e.read()
    kind = headers.get("Content-Type", "")
    if "json" in kind:
        return status, headers, strict_json(raw.decode())
    return status, headers, raw.decode(errors="replace")


def wait_until(what, seconds, probe, every=0.5):
    """Polls `probe` until it returns something truthy; fails at the deadline."""
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(every)
    fail(f"{what}: not within {seconds} s (last: {last})")


class Tokens:
    """HS256 tokens as the service expects them (`sub` the user id, `exp`, `role` for admin)."""

    def __init__(self, secret):
        self.secret = secret

    @staticmethod
    def _b64(raw):
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def user(self, user_id):
        header = self._b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        claims = {"sub": str(user_id), "exp": int(time.time()) + 3600, "iat": int(time.time())}
        payload = self._b64(json.dumps(claims).encode())
        signing_input = f"{header}.{payload}".encode()
        signature = hmac.new(self.secret, signing_input, hashlib.sha256).digest()
        return f"{header}.{payload}.{self._b64(signature)}"


class Stack:
    def __init__(self, args):
        self.apps = [f"http://127.0.0.1:{port}" for port in args.apps.split(",")]
        self.admin = os.environ["ADMIN_TOKEN"]
        with open(args.jwt_secret_file, "rb") as f:
            self.tokens = Tokens(f.read().rstrip(b"\r\n"))

    def app(self, user_id):
        return self.apps[user_id % len(self.apps)]

    def create(self, name, stock):
        status, _, body = request(
            "POST", f"{self.apps[0]}/coupons", self.admin, {"name": name, "stock": stock}
        )
        check(status == 201, f"creating an event answered {status}: {body}")
        check(body["stock"] == stock and body["state"] == "OPEN", f"created event: {body}")
        return body["id"]

    def apply(self, coupon, user_id, deadline_s=120):
        """The user's final answer: 202/200 with a ticket, or 410. 429 and 503 are answers a
        real client waits out (Retry-After) and asks again; each is counted."""
        token = self.tokens.user(user_id)
        url = f"{self.app(user_id)}/coupons/{coupon}/issue"
        deadline = time.monotonic() + deadline_s
        waited = {429: 0, 503: 0}
        while True:
            try:
                status, headers, body = request("POST", url, token)
            except OSError as e:  # a replica's connection reset while Redis restarts
                status, headers, body = 503, {}, str(e)
            if status in (200, 202, 410):
                return status, body, waited
            check(status in waited, f"user {user_id} applying: {status} {body}")
            if status == 503 and isinstance(body, dict):
                check(body.get("code") in ("UNAVAILABLE", "OUTCOME_UNKNOWN"), f"503 body: {body}")
            waited[status] += 1
            check(time.monotonic() < deadline, f"user {user_id} still {status} after {deadline_s} s")
            retry = float(headers.get("Retry-After", "1") or 1) if headers else 1.0
            time.sleep(min(retry, 1.0) * random.uniform(0.5, 1.0))

    def position(self, coupon, user_id):
        url = f"{self.app(user_id)}/coupons/{coupon}/position"
        while True:
            status, headers, body = request("GET", url, self.tokens.user(user_id))
            if status == 429:
                time.sleep(float(headers.get("Retry-After", "1")))
                continue
            check(status == 200, f"position of user {user_id}: {status} {body}")
            return body

    def rows(self, coupon):
        """Every persisted issue, in position order, through the admin API's pages."""
        rows, after = [], 0
        while True:
            status, _, body = request(
                "GET",
                f"{self.apps[0]}/coupons/{coupon}/issues?afterPosition={after}&limit=500",
                self.admin,
            )
            check(status == 200, f"issues page: {status} {body}")
            items = body["items"] if isinstance(body, dict) else body
            if not items:
                return rows
            rows.extend(items)
            after = items[-1]["position"]

    def event(self, coupon):
        status, headers, body = request("GET", f"{self.apps[0]}/coupons/{coupon}")
        check(status == 200, f"event {coupon}: {status} {body}")
        return body


def guarded(function):
    """A thread's unexpected error (a body that is not what the contract says, a reset) ends the
    run: an exception would otherwise end only its thread, and the run could pass without it."""

    def run(*args):
        try:
            return function(*args)
        except BaseException as e:  # noqa: BLE001 - any of them is a failure of the run
            fail(f"{function.__name__}: {e!r}")

    run.__name__ = function.__name__
    return run


def crowd(stack, coupon, users, workers):
    """Every user applies once, all released together; {user: (status, body)}."""
    start = threading.Barrier(workers)
    shares = [users[i::workers] for i in range(workers)]

    def run(share):
        start.wait()
        return [(u, stack.apply(coupon, u)) for u in share]

    run = guarded(run)

    began = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        answers = {u: a for part in pool.map(run, shares) for u, a in part}
    return answers, time.monotonic() - began


def tickets_issued_as_told(stack, coupon, told, seconds=180):
    """Every acknowledged winner reads ISSUED at the position they were told."""

    def settled():
        pending = []
        for user, position in told.items():
            body = stack.position(coupon, user)
            check(body["status"] not in ("FAILED", "LOST", "SOLD_OUT", "NOT_APPLIED"),
                  f"user {user}, told position {position}, now reads {body}")
            check(body["position"] == position, f"user {user} told {position}, reads {body}")
            if body["status"] != "ISSUED":
                pending.append(user)
        return not pending

    wait_until(f"{len(told)} winners ISSUED", seconds, settled, every=1)


def rows_are_exactly(stack, coupon, told):
    rows = stack.rows(coupon)
    check(len(rows) == len(told), f"{len(rows)} rows, {len(told)} acknowledged winners")
    by_user = {r["userId"]: r["position"] for r in rows}
    check(len(by_user) == len(rows), "a user holds two rows")
    check(sorted(by_user.values()) == list(range(1, len(rows) + 1)), "row positions not 1..N")
    check(by_user == told, "the rows are not the users at the positions they were told")


def the_cap(stack, stock=100, users=1000):
    coupon = stack.create("compose: the cap", stock)
    ids = list(range(1, users + 1))
    answers, took = crowd(stack, coupon, ids, workers=users)
    told = {u: body["position"] for u, (status, body, _) in answers.items() if status == 202}
    statuses = [status for status, _, _ in answers.values()]
    check(statuses.count(202) == stock, f"{statuses.count(202)} told 202, stock {stock}")
    check(statuses.count(410) == users - stock, f"{statuses.count(410)} told 410")
    for status, body, _ in answers.values():
        if status == 410:
            check(body.get("code") == "SOLD_OUT", f"410 body: {body}")
    check(sorted(told.values()) == list(range(1, stock + 1)), "positions told are not 1..100")
    limited = sum(w[429] for _, _, w in answers.values())
    unavailable = sum(w[503] for _, _, w in answers.values())
    check(unavailable == 0, f"{unavailable} answers of 503 with nothing failing")
    say(f"the cap: {users} users in {took:.2f} s ({users / took:.0f} applications/s), "
        f"{stock} told 202 at 1..{stock}, {users - stock} SOLD_OUT, {limited} 429s waited out")
    tickets_issued_as_told(stack, coupon, told)
    rows_are_exactly(stack, coupon, told)
    for user in random.sample([u for u in ids if u not in told], 50):
        body = stack.position(coupon, user)
        check(body["status"] == "SOLD_OUT", f"loser {user} reads {body}")
    event = stack.event(coupon)
    check((event["admitted"], event["issued"], event["remaining"], event["state"])
          == (stock, stock, 0, "SOLD_OUT"), f"event view {event}")
    say(f"the cap: {stock} rows at 1..{stock}, every winner ISSUED as told, losers SOLD_OUT")
    return coupon, users / took


def fairness_log(coupon, key, image, url):
    """`fcfs-coupon verify` (the image's, run on the host's network) with the key pinned; the
    log is built a moment after the rows, so it is asked again until it passes or 90 s."""
    command = ["docker", "run", "--rm", "--network", "host", image, "verify", "--url", url,
               "--coupon", str(coupon), "--key", key]
    deadline = time.monotonic() + 90
    while True:
        run = subprocess.run(command, capture_output=True, text=True)
        if run.returncode == 0:
            break
        check(time.monotonic() < deadline,
              f"verify with the pinned key failed for 90 s:\n{run.stdout}{run.stderr}")
        time.sleep(2)
    say("fairness log: " + " | ".join(line for line in run.stdout.splitlines() if line))


def prometheus(url, replicas):
    def targets_up():
        _, _, body = request("GET", f"{url}/api/v1/targets")
        active = [t for t in body["data"]["activeTargets"] if t["labels"]["job"] == "fcfs-coupon"]
        return len(active) == replicas and all(t["health"] == "up" for t in active) and active

    active = wait_until(f"Prometheus scraping {replicas} app replicas", 90, targets_up, every=2)
    _, _, body = request("GET", f"{url}/api/v1/rules")
    rules = [r["name"] for g in body["data"]["groups"] for r in g["rules"]]
    check(len(rules) >= 5, f"the project's rules are not loaded: {rules}")
    _, _, body = request("GET", f"{url}/api/v1/alerts")
    firing = [a["labels"]["alertname"] for a in body["data"]["alerts"] if a["state"] == "firing"]
    check(not firing, f"alerts firing: {firing}")
    say(f"prometheus: {len(active)} targets up ({', '.join(t['labels']['instance'] for t in active)}), "
        f"{len(rules)} rules loaded, none firing")


def query(url, expr):
    _, _, body = request("GET", f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    check(body["status"] == "success", f"{expr}: {body}")
    return body["data"]["result"]


def after_the_kill(url, replicas, since):
    """Once every replica has been scraped after the kill phase. A restarted Redis cannot prove
    it lost nothing, so with APP_REDIS__ACK_REPLICAS=0 each watcher holds the event and rebuilds
    it (README, Guarantees) under the reason `server_changed`, and FcfsCouponsHeld pages; a hold
    for `missing` or `regressed` would mean Redis came back without its data. Every rule
    evaluates, and no other alert fires."""

    def scraped():
        stamps = query(url, 'timestamp(up{job="fcfs-coupon"})')
        return len(stamps) == replicas and all(float(r["value"][1]) > since for r in stamps)

    wait_until("a scrape of every replica after the kill", 60, scraped, every=1)
    held = {r["metric"].get("reason", "?"): float(r["value"][1])
            for r in query(url, "sum by (reason) (fcfs_coupons_held_total)")}
    held = {reason: n for reason, n in held.items() if n > 0}
    check(set(held) <= {"server_changed"}, f"Redis came back without its data: holds {held}")
    restored = query(url, "sum(fcfs_coupons_restored_total)")
    restored = float(restored[0]["value"][1]) if restored else 0
    _, _, body = request("GET", f"{url}/api/v1/rules")
    broken = [r["name"] for g in body["data"]["groups"] for r in g["rules"] if r["health"] != "ok"]
    check(not broken, f"rules that do not evaluate: {broken}")

    def firing():
        _, _, body = request("GET", f"{url}/api/v1/alerts")
        return {a["labels"]["alertname"] for a in body["data"]["alerts"] if a["state"] == "firing"}

    expected = {"FcfsCouponsHeld"} if held else set()
    if held:
        wait_until("FcfsCouponsHeld firing for the held event", 60,
                   lambda: "FcfsCouponsHeld" in firing(), every=1)
    check(firing() == expected, f"alerts firing after the kill: {firing()}, expected {expected}")
    say(f"after the kill: holds {held or 'none'}, {restored:.0f} restores from PostgreSQL; every "
        f"rule evaluates; firing: {sorted(expected) or 'none'}")


def redis_killed(stack, container, recreate, stock=1000, workers=48):
    """A crowd applies; after a random number of tickets (seeded, printed) Redis is SIGKILLed
    and started again, well before the stock is gone."""
    kill_after = random.randint(20, stock // 5)
    coupon = stack.create("compose: Redis killed", stock)
    next_user = iter(range(100_000, 1_000_000))
    lock = threading.Lock()
    told, answers_202 = {}, []
    killed_at = [None]
    sold_out = threading.Event()
    waited = {429: 0, 503: 0}

    @guarded
    def worker():
        while not sold_out.is_set():
            with lock:
                user = next(next_user)
            status, body, w = stack.apply(coupon, user, deadline_s=180)
            with lock:
                waited[429] += w[429]
                waited[503] += w[503]
                if status in (200, 202):
                    check(body["userId"] == user, f"ticket for another user: {body}")
                    told[user] = body["position"]
                    answers_202.append(time.monotonic())
                else:
                    check(body.get("code") == "SOLD_OUT", f"410 body: {body}")
                    sold_out.set()

    @guarded
    def nemesis():
        wait_until(f"{kill_after} tickets before the kill", 60,
                   lambda: len(answers_202) >= kill_after, every=0.01)
        subprocess.run(["docker", "kill", "--signal", "KILL", container], check=True,
                       capture_output=True)
        killed_at[0] = time.monotonic()
        say(f"redis: SIGKILLed after {len(answers_202)} tickets; a new container on its volume")
        subprocess.run(["docker", "rm", "--force", container], check=True, capture_output=True)
        subprocess.run(shlex.split(recreate), check=True, capture_output=True)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    fault = threading.Thread(target=nemesis)
    for t in threads + [fault]:
        t.start()
    for t in threads + [fault]:
        t.join()

    positions = sorted(told.values())
    check(len(set(positions)) == len(positions), "a position was told to two users")
    check(positions == list(range(1, stock + 1)), f"tickets told: {len(positions)}, not 1..{stock}")
    after = [t for t in answers_202 if t > killed_at[0]]
    check(after, "no ticket after the kill")
    to_first = min(after) - killed_at[0]
    tickets_issued_as_told(stack, coupon, told)
    rows_are_exactly(stack, coupon, told)
    event = stack.event(coupon)
    check((event["admitted"], event["issued"], event["state"]) == (stock, stock, "SOLD_OUT"),
          f"event view after the kill: {event}")
    say(f"redis killed: {stock} tickets, all ISSUED as told; {waited[503]} 503s waited out; "
        f"first 202 {to_first:.2f} s after the kill")
    return to_first


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", required=True, help="published ports of the app replicas, a,b,c")
    parser.add_argument("--prometheus", required=True)
    parser.add_argument("--jwt-secret-file", required=True)
    parser.add_argument("--verifier-key", required=True)
    parser.add_argument("--redis-container", required=True)
    parser.add_argument("--recreate-redis", required=True,
                        help="the command that makes a new Redis container on the old volume")
    parser.add_argument("--verify-image", required=True)
    parser.add_argument("--healthy-secs", required=True)
    parser.add_argument("--seed", type=int, help="replays a run's random choices")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    say(f"seed {seed} (replay: --seed {seed})")
    random.seed(seed)
    stack = Stack(args)

    coupon, rate = the_cap(stack)
    fairness_log(coupon, args.verifier_key, args.verify_image, stack.apps[0])
    prometheus(args.prometheus, len(stack.apps))
    to_first = redis_killed(stack, args.redis_container, args.recreate_redis)
    after_the_kill(args.prometheus, len(stack.apps), time.time())
    print(f"compose figures: healthy in {args.healthy_secs} s, {rate:.0f} applications/s "
          f"through the stack, {to_first:.2f} s from the Redis kill to the first 202")


if __name__ == "__main__":
    main()

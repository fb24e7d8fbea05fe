"""Usage accounting in Redis: API calls and gateway requests counted without a database
write per request, folded into the usage counters by Beat.

What is counted (`UsageCounter.kind`, and what its `key` and `connection` are):

* `api_call`: every request authenticated as an operator's API client, whatever its
  answer (a 4xx or 429 of an authenticated client is still a call it made), plus every
  successful token request. Key: the endpoint category (`API_CATEGORIES`). Counted by
  `tenants.middleware.ApiCallAccountingMiddleware`; platform-key, anonymous and refused
  (401) requests are not operator calls and are not counted.
* `gateway_request`: one HTTP request through a connection. Key: the connector slug;
  connection: the collector id (`online-collection`), the webhook endpoint id
  (`webhook`: each delivery attempt), `<stream id>/<node id>` (`http`: each request a
  `transforms/http` node sends).
* `event`: records stored by ingestion, by record `type` (key; "" when it has none),
  connection: the collector id.

Stored ingestion requests and their events are counted by the ingestion statement itself
(a `UsageCounterDelta` written with the records, exact and transactional). Everything
else, refused ingestion requests (a bad body, a replay) included, goes through
`usage_count`: one MULTI/EXEC round trip that adds to a hash per UTC
hour, `<prefix>:usage:<YYYYMMDDHH>`, field `<operator>|<kind>|<key>|<connection>` (key
and connection with `%` and `|` percent-encoded), and names the hour in the set
`<prefix>:usage:hours`. Both writes are in one transaction, so an hour's hash never
exists without its name in the set. The first count of a hash also gives it its fold id
(field `fold_id`, a UUID), which stays with those counts until they are folded.

Folding (`tenants.services.usage_counters_fold`, every minute), exactly once:

1. `hours_claim` RENAMEs each hour's hash to a folding key named by its fold id,
   `<prefix>:usage:folding:<YYYYMMDDHH>:<fold id>`, and lists it in
   `<prefix>:usage:folding` (one Lua script: atomic). Counts made after that start a
   fresh hash, with a new fold id.
2. The fold writes the folding key's counts as `UsageCounterDelta` rows in the same
   statement that inserts the marker `UsageFold(id=<fold id>)`; the marker's primary key
   lets exactly one fold through (a second one waits for the first to commit and then
   inserts nothing).
3. After commit, `folding_release` deletes the folding key.

A folding key left behind (a worker killed between steps) is listed by
`foldings_left_over` and goes through step 2 again: with its marker committed nothing is
written twice, without it the counts are folded now. The fold id travels with the counts
rather than being drawn at the claim so that a Redis that goes back in time (restarted
from a snapshot older than the last folds, or failed over to a replica that had not seen
them) brings back folded hours with the ids their markers hold: they are not folded
again. Counts added to such a hash after its return are lost with it (the next fold
drops it), as counts are in any outage.

A Redis error never fails the request being counted: the count is lost, a warning is
logged once a minute and `lost_counts` says how many. A Redis outage thus loses at most
the counts not yet folded, never a request. Hashes expire after
TALLY["USAGE"]["REDIS_HOURS"] without a write, so counts survive that long without a
fold.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import unquote

import redis
from django.conf import settings
from django.utils import timezone

from common.redis import OutageTally, redis_client

logger = logging.getLogger(__name__)

# Counter kinds.
API_CALL = "api_call"
GATEWAY_REQUEST = "gateway_request"
EVENT = "event"

# Connector slugs, the keys of gateway requests.
ONLINE_COLLECTION = "online-collection"
WEBHOOK = "webhook"
HTTP = "http"

# The endpoint categories API calls are counted under (the seed API's groups).
API_CATEGORIES = (
    "usage-metering",
    "online-collection",
    "stream-management",
    "aggregation",
    "global-parameters",
    "metrics",
    "billing",
    "oauth",
)
# An operator endpoint outside every category (none today; the tests check that).
OTHER_CATEGORY = "other"
# By the first segment of the path; `/v1/…` is named by its second.
_CATEGORY_BY_SEGMENT = {
    "usage-metering": "usage-metering",
    "online-collection": "online-collection",
    "stream-management": "stream-management",
    "aggregation": "aggregation",
    "global-parameters": "global-parameters",
    "metrics": "metrics",
    "billing": "billing",
    "oauth": "oauth",
    "authentication": "oauth",  # /authentication/v1/oauth/token
}

# As long as UsageCounter.key and .connection; longer values are cut to fit.
TEXT_MAX_LENGTH = 100
HOUR_FORMAT = "%Y%m%d%H"
# The field of an hour's hash holding its fold id (count fields always contain "|").
FOLD_ID_FIELD = "fold_id"
# The Django request attribute naming the operator whose API call a request is.
REQUEST_ATTRIBUTE = "_tally_api_operator_id"


def api_category(path: str) -> str:
    """The endpoint category of a request path (`/usage-metering/v1/meters` →
    `usage-metering`, `/v1/metrics/…` → `metrics`)."""
    segments = path.lstrip("/").split("/", 2)
    first = segments[0]
    if first == "v1" and len(segments) > 1:
        first = segments[1]
    return _CATEGORY_BY_SEGMENT.get(first, OTHER_CATEGORY)


def api_caller_mark(request, operator_id) -> None:
    """Say that `request` (a Django or DRF request) is an API call of the operator; the
    accounting middleware counts it when the answer is ready. Set by authentication, so
    that only requests of a known operator client count."""
    setattr(getattr(request, "_request", request), REQUEST_ATTRIBUTE, operator_id)


def api_caller(request) -> uuid.UUID | None:
    """The operator id `api_caller_mark` left on the request, if any."""
    return getattr(request, REQUEST_ATTRIBUTE, None)


# --- Counting ----------------------------------------------------------------------------


def usage_count(
    *,
    operator_id,
    kind: str,
    key: str = "",
    connection: str = "",
    n: int = 1,
    at: datetime | None = None,
) -> None:
    """Add `n` to the operator's `kind` counter for the UTC hour of `at` (default: now).

    One round trip to Redis; never raises: when Redis cannot be reached the count is
    lost (`lost_counts`) and a warning is logged at most once a minute.
    """
    hour = (at or timezone.now()).astimezone(UTC).strftime(HOUR_FORMAT)
    field = _field(str(operator_id), kind, key, connection)
    try:
        hash_key = _key(hour)
        pipe = _redis().pipeline(transaction=True)
        pipe.hsetnx(hash_key, FOLD_ID_FIELD, str(uuid.uuid4()))
        pipe.hincrby(hash_key, field, n)
        pipe.expire(hash_key, _retention_seconds())
        pipe.sadd(_key("hours"), hour)
        pipe.execute()
    except Exception as error:  # a count never fails what it counts
        lost_counts.record(error, n)


lost_counts = OutageTally(
    "Redis is unreachable (%s); usage counts are lost until it is back "
    "(%d lost so far in this process)."
)


def _field(operator_id: str, kind: str, key: str, connection: str) -> str:
    return "|".join(
        (operator_id, kind, _escape(key[:TEXT_MAX_LENGTH]), _escape(connection[:TEXT_MAX_LENGTH]))
    )


def _escape(text: str) -> str:
    return text.replace("%", "%25").replace("|", "%7C")


def _key(suffix: str) -> str:
    return f"{settings.REDIS_KEY_PREFIX}:usage:{suffix}"


def _retention_seconds() -> int:
    return int(settings.TALLY["USAGE"]["REDIS_HOURS"]) * 3600


def _redis() -> redis.Redis:
    return redis_client()


# --- Folding (the Redis side; the database side is tenants.services) ---------------------


@dataclass(frozen=True)
class Folding:
    """One hour's counts renamed away for folding; `fold_id` is its marker's id."""

    hour: datetime
    fold_id: uuid.UUID

    @property
    def member(self) -> str:
        return f"{self.hour:{HOUR_FORMAT}}:{self.fold_id}"

    @property
    def key(self) -> str:
        return _key(f"folding:{self.member}")

    @classmethod
    def from_member(cls, member: str) -> Folding | None:
        hour, _, fold_id = member.partition(":")
        try:
            return cls(datetime.strptime(hour, HOUR_FORMAT).replace(tzinfo=UTC), uuid.UUID(fold_id))
        except ValueError:
            return None


@dataclass(frozen=True)
class Count:
    operator_id: uuid.UUID
    kind: str
    key: str
    connection: str
    n: int


# KEYS: the hour's hash, the folding key, the hours set, the folding set.
# ARGV: the hour, the folding member, seconds the folding key is kept, the fold id the
# hash held when it was read ("" when none). A hash whose fold id differs was claimed
# and started afresh since: it stays for the next fold.
_CLAIM_SCRIPT = f"""
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[3], ARGV[1])
  return 0
end
if (redis.call('HGET', KEYS[1], '{FOLD_ID_FIELD}') or '') ~= ARGV[4] then
  return 0
end
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[4], ARGV[2])
return 1
"""


def hours_claim() -> list[Folding]:
    """Rename every hour's hash to a folding key named by its fold id (step 1); returns
    them."""
    client = _redis()
    claimed = []
    for raw in sorted(client.smembers(_key("hours"))):
        hour_text = raw.decode()
        try:
            hour = datetime.strptime(hour_text, HOUR_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            client.srem(_key("hours"), raw)
            continue
        raw_id = client.hget(_key(hour_text), FOLD_ID_FIELD)
        held = raw_id.decode() if raw_id is not None else ""
        # A hash counted before fold ids existed has none: it gets one now.
        folding = Folding(hour, _uuid_or_none(held) or uuid.uuid4())
        keys = [_key(hour_text), folding.key, _key("hours"), _key("folding")]
        args = [hour_text, folding.member, _retention_seconds(), held]
        if client.eval(_CLAIM_SCRIPT, len(keys), *keys, *args):
            claimed.append(folding)
    return claimed


def _uuid_or_none(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def foldings_left_over() -> list[Folding]:
    """Folding keys a previous fold claimed and did not release (or is still folding)."""
    client = _redis()
    found = []
    for raw in sorted(client.smembers(_key("folding"))):
        folding = Folding.from_member(raw.decode())
        if folding is None:
            client.srem(_key("folding"), raw)
        else:
            found.append(folding)
    return found


def folding_counts(folding: Folding) -> list[Count]:
    """The counts held under a folding key (none once it is released or expired)."""
    counts = []
    for raw_field, raw_n in _redis().hgetall(folding.key).items():
        if raw_field == FOLD_ID_FIELD.encode():
            continue
        parts = raw_field.decode().split("|")
        try:
            operator_id, kind, key, connection = parts
            count = Count(
                uuid.UUID(operator_id), kind, unquote(key), unquote(connection), int(raw_n)
            )
        except ValueError:
            logger.warning("Skipped a malformed usage count %r in %s.", raw_field, folding.key)
            continue
        if count.n:
            counts.append(count)
    return counts


def folding_release(folding: Folding) -> None:
    """Forget a folded key (step 3). Never raises: a key left behind is found and
    released by the next fold."""
    try:
        pipe = _redis().pipeline(transaction=True)
        pipe.delete(folding.key)
        pipe.srem(_key("folding"), folding.member)
        pipe.execute()
    except redis.exceptions.RedisError:
        logger.warning("Could not release %s; the next fold will.", folding.key)

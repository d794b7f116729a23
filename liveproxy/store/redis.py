""":class:`RedisStore`: the state store of several hosts (``STATE_URL=redis://host:port/db``).

Every operation is one Lua script (``EVALSHA``; coredis loads it again after ``NOSCRIPT``, as
after a Redis restart), so it runs whole on the server and two hosts never spend one token nor
both take the last place. Time is the caller's: each script gets ``now`` from the store's clock
and decides expiry with it; the keys also carry real TTLs (the logical lifetime plus
:data:`TTL_MARGIN`) only so that nothing outlives its use when no script comes by to prune it.

Key layout, under a prefix (``liveproxy:`` unless told otherwise), ``{client}`` being the
grant's client and ``{key}`` a :func:`~liveproxy.store.token_key` hash (never a token):

- ``t:{key}``: hash ``grant`` (the grant as JSON), ``client``, and once a multi-use token
  started a session ``used`` (how many): an unspent token.
- ``tokens``: sorted set of every token's ``{key}``, scored by its expiry.
- ``ct:{client}``: sorted set of the client's token ``{key}``, scored by expiry.
- ``leases``: sorted set of every lease id, scored by its expiry.
- ``lc``: hash of lease id to its client (to prune the client's set with the lease).
- ``cl:{client}``: sorted set of the client's lease ids, scored by expiry.
- ``b:{client}``: hash ``tokens``, ``updated``: the client's rate-limit bucket.
- ``s:{key}``: hash ``grant``, ``client``, ``until``: an ephemeral token that started a session,
  which still resumes its sessions until ``until`` (its real TTL prunes it; counted nowhere).
- ``g:{counter}``: hash ``value``, ``expires``: a budget counter, ``{counter}`` the
  :class:`~liveproxy.core.budget.Charge`'s key (scope, unit, window), kept the charge's
  ``ttl`` (so a window's counters go some time after it ends).
- ``c:{key}``: hash ``who`` (JSON ``[origin, client]``), ``state``, ``expires``: a conversation
  kept under a resume token's hash. It is in no index: its real TTL (the window plus
  :data:`TTL_MARGIN`) is what prunes it, and a take past ``expires`` deletes it.
- ``ls``: hash of live session id to its summary; ``lsx``: sorted set of those ids scored by
  expiry; ``lsi``: the same ids, all scored 0 (listed in id order); ``lse``: set of the ids the
  operator marked to end.
- ``u``: sorted set of usage record keys, all scored 0 (so in key order: by end);
  ``uc:{client}``: the client's record keys likewise; ``ur``: hash of key to record;
  ``ucl``: hash of key to client (to prune the client's set with the record).

Scripts prune what has expired (a bounded batch of tokens and of leases per call, with their
entries in the client's sets), and counting only looks at scores above ``now``, so the keys stay
about as large as what the limits allow. Scripts build the per-client keys from the
prefix: meant for one Redis server (or its primary), not a Redis Cluster.

Failures: a refused or lost connection, a timeout (:data:`DEFAULT_TIMEOUT` to connect and for
each reply, :data:`DEADLINE_FACTOR` times that for a whole call) or an error reply becomes
:class:`~liveproxy.store.StoreUnavailable`. After a timeout the store drops its connections,
so a server that hung, or a connection that died silently, is replaced at the next call. Calls
are not retried: a reply lost after the script ran may leave a token issued or spent unknown to
its caller (its place comes back when it expires), and a retry would hide that.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Final
from urllib.parse import unquote, urlsplit

import coredis
import orjson
import trio
from coredis.commands.script import Script
from coredis.exceptions import RedisError
from coredis.retry import NoRetryPolicy
from coredis.typing import ResponseType

from liveproxy.core.budget import Charge, Charged
from liveproxy.redact import SECRETS
from liveproxy.store import (
    DEFAULT_LEASE_SECONDS,
    Conversation,
    Grant,
    Lease,
    Limits,
    LiveSession,
    Rate,
    Refused,
    StoreUnavailable,
    Usage,
    UsageRecord,
    at_capacity,
    token_key,
    too_many_sessions,
    usage_key_prefix,
)

#: Seconds to connect to Redis, and to wait for each reply.
DEFAULT_TIMEOUT: Final = 1.0
#: A whole call (connecting, a reply, reloading a lost script) gives up after this many timeouts.
DEADLINE_FACTOR: Final = 2.0
#: Real TTLs outlive the logical expiry by this many seconds (clock skew between hosts).
TTL_MARGIN: Final = 60.0
#: Expired tokens (and leases) a script deletes at most per call (counting never depends on it).
PRUNE_BATCH: Final = 256
DEFAULT_PREFIX: Final = "liveproxy:"

# ARGV[1] is the key prefix, ARGV[2] ``now``; every script starts with these helpers.
_COMMON = f"""
local P = ARGV[1]
local now = tonumber(ARGV[2])
local TTL_MARGIN = {TTL_MARGIN}
local function num(x) return string.format('%.17g', x) end
local function keep(key, seconds)
  local ms = math.ceil((seconds + {TTL_MARGIN}) * 1000)
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms) end
end
local function live(key) return redis.call('ZCOUNT', key, '(' .. num(now), '+inf') end
local function prune_leases()
  local expired = redis.call('ZRANGEBYSCORE', P .. 'leases', '-inf', num(now),
    'LIMIT', 0, {PRUNE_BATCH})
  for _, id in ipairs(expired) do
    redis.call('ZREM', P .. 'leases', id)
    local client = redis.call('HGET', P .. 'lc', id)
    if client then
      redis.call('HDEL', P .. 'lc', id)
      redis.call('ZREM', P .. 'cl:' .. client, id)
    end
  end
end
local function prune()
  local expired = redis.call('ZRANGEBYSCORE', P .. 'tokens', '-inf', num(now),
    'LIMIT', 0, {PRUNE_BATCH})
  for _, key in ipairs(expired) do
    local client = redis.call('HGET', P .. 't:' .. key, 'client')
    if client then redis.call('ZREM', P .. 'ct:' .. client, key) end
    redis.call('DEL', P .. 't:' .. key)
    redis.call('ZREM', P .. 'tokens', key)
  end
  prune_leases()
end
local function add_lease(id, client, seconds)
  local expires = num(now + seconds)
  redis.call('ZADD', P .. 'leases', expires, id)
  keep(P .. 'leases', seconds)
  redis.call('HSET', P .. 'lc', id, client)
  keep(P .. 'lc', seconds)
  redis.call('ZADD', P .. 'cl:' .. client, expires, id)
  keep(P .. 'cl:' .. client, seconds)
end
local function ephemeral_grant(text)
  local ok, grant = pcall(cjson.decode, text)
  if not ok or type(grant) ~= 'table' or type(grant['ephemeral']) ~= 'string' then return nil end
  return grant
end
local function drop_lease(id, client)
  redis.call('ZREM', P .. 'leases', id)
  redis.call('HDEL', P .. 'lc', id)
  redis.call('ZREM', P .. 'cl:' .. client, id)
end
"""

# ARGV: prefix, now, client, rate count, rate period. Returns the seconds to wait (0: spent).
_TAKE_SIGN_IN = (
    _COMMON
    + """
local client, count, period = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local rate = count / period
local bucket = P .. 'b:' .. client
local state = redis.call('HMGET', bucket, 'tokens', 'updated')
local tokens, updated = tonumber(state[1]), tonumber(state[2])
if tokens == nil then tokens, updated = count, nil end
if updated ~= nil and now > updated then
  tokens = math.min(count, tokens + (now - updated) * rate)
end
if updated == nil or now > updated then updated = now end
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', bucket, 'tokens', num(tokens), 'updated', num(updated))
keep(bucket, period)
return num(wait)
"""
)

# ARGV: prefix, now, key, client, grant JSON, token_ttl, max_sessions, per_client.
# Returns {'ok'}, {'capacity'} or {'client', wait}.
_ADMIT = (
    _COMMON
    + """
prune()
local key, client, ttl = ARGV[3], ARGV[4], tonumber(ARGV[6])
if live(P .. 'tokens') + live(P .. 'leases') >= tonumber(ARGV[7]) then
  return {'capacity'}
end
local own_tokens, own_leases = P .. 'ct:' .. client, P .. 'cl:' .. client
local per_client = tonumber(ARGV[8])
if per_client > 0 then
  redis.call('ZREMRANGEBYSCORE', own_tokens, '-inf', num(now))
  redis.call('ZREMRANGEBYSCORE', own_leases, '-inf', num(now))
  if redis.call('ZCARD', own_tokens) + redis.call('ZCARD', own_leases) >= per_client then
    local oldest = redis.call('ZRANGE', own_tokens, 0, 0, 'WITHSCORES')
    local wait = ttl
    if oldest[2] then wait = tonumber(oldest[2]) - now end
    return {'client', num(wait)}
  end
end
local expires = num(now + ttl)
redis.call('HSET', P .. 't:' .. key, 'grant', ARGV[5], 'client', client)
keep(P .. 't:' .. key, ttl)
redis.call('ZADD', P .. 'tokens', expires, key)
keep(P .. 'tokens', ttl)
redis.call('ZADD', own_tokens, expires, key)
keep(own_tokens, ttl)
return {'ok'}
"""
)

# ARGV: prefix, now, key, lease id, lease seconds. Returns the grant JSON, or nil.
_START_SESSION = (
    _COMMON
    + """
local key = ARGV[3]
local fields = redis.call('HMGET', P .. 't:' .. key, 'grant', 'client')
local expires = redis.call('ZSCORE', P .. 'tokens', key)
redis.call('DEL', P .. 't:' .. key)
redis.call('ZREM', P .. 'tokens', key)
if not fields[1] then return false end
local client = fields[2] or ''
redis.call('ZREM', P .. 'ct:' .. client, key)
if not expires or tonumber(expires) <= now then return false end
add_lease(ARGV[4], client, tonumber(ARGV[5]))
return fields[1]
"""
)

# ARGV: prefix, now, key. Returns the grant JSON of an ephemeral token that may still open a
# session (unspent and unexpired, or spent and before its ``until``), or nil.
_EPHEMERAL_GRANT = (
    _COMMON
    + """
local key = ARGV[3]
local text = redis.call('HGET', P .. 't:' .. key, 'grant')
local expires = redis.call('ZSCORE', P .. 'tokens', key)
if text and expires and tonumber(expires) > now then
  if ephemeral_grant(text) then return text end
  return false
end
local spent = redis.call('HMGET', P .. 's:' .. key, 'grant', 'until')
if spent[1] and spent[2] and tonumber(spent[2]) > now then return spent[1] end
return false
"""
)

# ARGV: prefix, now, key, lease id, lease seconds, resuming ('1' or '0'), max_sessions,
# per_client, token_ttl. Returns {'ok', grant JSON}, {'capacity'}, {'client', wait}, or nil.
_START_NATIVE = (
    _COMMON
    + """
prune()
local key, resuming = ARGV[3], ARGV[6] == '1'
local tkey = P .. 't:' .. key
local fields = redis.call('HMGET', tkey, 'grant', 'client', 'used')
local expires = redis.call('ZSCORE', P .. 'tokens', key)
local in_tokens = fields[1] and expires and tonumber(expires) > now
local grant, client, uses, used, resume_until
if in_tokens then
  local decoded = ephemeral_grant(fields[1])
  if not decoded then return false end
  grant, client = fields[1], fields[2] or ''
  uses, used = tonumber(decoded['uses']) or 1, tonumber(fields[3] or '0')
  resume_until = tonumber(expires) + (tonumber(decoded['session_time_limit']) or 0)
elseif resuming then
  local spent = redis.call('HMGET', P .. 's:' .. key, 'grant', 'client', 'until')
  if not spent[1] or not spent[3] or tonumber(spent[3]) <= now then return false end
  grant, client = spent[1], spent[2] or ''
else
  return false
end
local last = in_tokens and used + 1 == uses
if resuming or not last then
  if live(P .. 'tokens') + live(P .. 'leases') >= tonumber(ARGV[7]) then
    return {'capacity'}
  end
  local per_client = tonumber(ARGV[8])
  if per_client > 0 then
    local own_tokens, own_leases = P .. 'ct:' .. client, P .. 'cl:' .. client
    redis.call('ZREMRANGEBYSCORE', own_tokens, '-inf', num(now))
    redis.call('ZREMRANGEBYSCORE', own_leases, '-inf', num(now))
    local held = redis.call('ZCARD', own_tokens) + redis.call('ZCARD', own_leases)
    if held >= per_client then
      local oldest = redis.call('ZRANGE', own_tokens, 0, 0, 'WITHSCORES')
      local wait = tonumber(ARGV[9])
      if oldest[2] then wait = tonumber(oldest[2]) - now end
      return {'client', num(wait)}
    end
  end
end
if not resuming then
  if last then
    redis.call('DEL', tkey)
    redis.call('ZREM', P .. 'tokens', key)
    redis.call('ZREM', P .. 'ct:' .. client, key)
  else
    redis.call('HSET', tkey, 'used', tostring(used + 1))
  end
  local skey = P .. 's:' .. key
  if redis.call('EXISTS', skey) == 0 then
    redis.call('HSET', skey, 'grant', grant, 'client', client, 'until', num(resume_until))
    redis.call('PEXPIRE', skey,
      math.max(1, math.ceil((resume_until - now + TTL_MARGIN) * 1000)))
  end
end
add_lease(ARGV[4], client, tonumber(ARGV[5]))
return {'ok', grant}
"""
)

# ARGV: prefix, now, lease seconds, then a lease id and its client per lease.
_RENEW = (
    _COMMON
    + """
prune_leases()
local seconds = tonumber(ARGV[3])
for i = 4, #ARGV, 2 do add_lease(ARGV[i], ARGV[i + 1], seconds) end
return 0
"""
)

# ARGV: prefix, now, lease id, client.
_END_SESSION = (
    _COMMON
    + """
drop_lease(ARGV[3], ARGV[4])
redis.call('HDEL', P .. 'ls', ARGV[3])
redis.call('ZREM', P .. 'lsx', ARGV[3])
redis.call('ZREM', P .. 'lsi', ARGV[3])
redis.call('SREM', P .. 'lse', ARGV[3])
return 0
"""
)

# ARGV: prefix, now. Returns {tokens, leases}, both unexpired.
_USAGE = (
    _COMMON
    + """
prune()
return {live(P .. 'tokens'), live(P .. 'leases')}
"""
)


# ARGV: prefix, now, key, who (JSON [origin, client]), state, window.
_KEEP_CONVERSATION = (
    _COMMON
    + """
local key, window = P .. 'c:' .. ARGV[3], tonumber(ARGV[6])
redis.call('DEL', key)
redis.call('HSET', key, 'who', ARGV[4], 'state', ARGV[5], 'expires', num(now + window))
redis.call('PEXPIRE', key, math.max(1, math.ceil((window + TTL_MARGIN) * 1000)))
return 0
"""
)

# ARGV: prefix, now, key, who. Returns {state, expires} (the conversation deleted), or nil: none
# kept, expired (then deleted), or kept for another origin or client (then left kept).
_TAKE_CONVERSATION = (
    _COMMON
    + """
local key = P .. 'c:' .. ARGV[3]
local fields = redis.call('HMGET', key, 'who', 'state', 'expires')
if not fields[1] or not fields[2] or not fields[3] then return false end
if tonumber(fields[3]) <= now then
  redis.call('DEL', key)
  return false
end
if fields[1] ~= ARGV[4] then return false end
redis.call('DEL', key)
return {fields[2], fields[3]}
"""
)

# ARGV: prefix, now, key, who, state, expires. Keeps the conversation until ``expires``.
_RETURN_CONVERSATION = (
    _COMMON
    + """
local key, expires = P .. 'c:' .. ARGV[3], tonumber(ARGV[6])
if expires <= now then return 0 end
redis.call('DEL', key)
redis.call('HSET', key, 'who', ARGV[4], 'state', ARGV[5], 'expires', num(expires))
redis.call('PEXPIRE', key, math.max(1, math.ceil((expires - now + TTL_MARGIN) * 1000)))
return 0
"""
)


# The operator's view. Drops live sessions whose summaries expired (a bounded batch).
_PRUNE_LIVE = f"""
local function prune_live()
  local expired = redis.call('ZRANGEBYSCORE', P .. 'lsx', '-inf', num(now),
    'LIMIT', 0, {PRUNE_BATCH})
  for _, id in ipairs(expired) do
    redis.call('ZREM', P .. 'lsx', id)
    redis.call('ZREM', P .. 'lsi', id)
    redis.call('HDEL', P .. 'ls', id)
    redis.call('SREM', P .. 'lse', id)
  end
end
"""

# ARGV: prefix, now, lease seconds, then a lease id, its client and its summary per lease.
# Returns the ids among them marked to end.
_RENEW_SESSIONS = (
    _COMMON
    + _PRUNE_LIVE
    + """
prune_leases()
prune_live()
local seconds = tonumber(ARGV[3])
local marked = {}
for i = 4, #ARGV, 3 do
  local id = ARGV[i]
  add_lease(id, ARGV[i + 1], seconds)
  redis.call('HSET', P .. 'ls', id, ARGV[i + 2])
  redis.call('ZADD', P .. 'lsx', num(now + seconds), id)
  redis.call('ZADD', P .. 'lsi', 0, id)
  if redis.call('SISMEMBER', P .. 'lse', id) == 1 then table.insert(marked, id) end
end
for _, key in ipairs({'ls', 'lsx', 'lsi', 'lse'}) do keep(P .. key, seconds) end
return marked
"""
)

# ARGV: prefix, now, after, limit. Returns {id, summary, id, summary, ...}.
_LIVE_SESSIONS = (
    _COMMON
    + _PRUNE_LIVE
    + """
prune_live()
local start = '(' .. ARGV[3]
if ARGV[3] == '' then start = '-' end
local ids = redis.call('ZRANGEBYLEX', P .. 'lsi', start, '+', 'LIMIT', 0, ARGV[4])
local found = {}
for _, id in ipairs(ids) do
  local expires = redis.call('ZSCORE', P .. 'lsx', id)
  local summary = redis.call('HGET', P .. 'ls', id)
  if expires and tonumber(expires) > now and summary then
    table.insert(found, id)
    table.insert(found, summary)
  end
end
return found
"""
)

# ARGV: prefix, now, id. Returns 1 when marked, 0 when no live session has that id.
_MARK_SESSION_END = (
    _COMMON
    + """
local expires = redis.call('ZSCORE', P .. 'lsx', ARGV[3])
if not expires or tonumber(expires) <= now then return 0 end
redis.call('SADD', P .. 'lse', ARGV[3])
return 1
"""
)

# ARGV: prefix, now, oldest key kept, retention seconds, key, client, record.
_KEEP_USAGE = (
    _COMMON
    + f"""
local expired = redis.call('ZRANGEBYLEX', P .. 'u', '-', '(' .. ARGV[3], 'LIMIT', 0, {PRUNE_BATCH})
for _, key in ipairs(expired) do
  local client = redis.call('HGET', P .. 'ucl', key)
  if client then redis.call('ZREM', P .. 'uc:' .. client, key) end
  redis.call('HDEL', P .. 'ur', key)
  redis.call('HDEL', P .. 'ucl', key)
  redis.call('ZREM', P .. 'u', key)
end
local seconds = tonumber(ARGV[4])
local key, client = ARGV[5], ARGV[6]
redis.call('ZADD', P .. 'u', 0, key)
redis.call('ZADD', P .. 'uc:' .. client, 0, key)
redis.call('HSET', P .. 'ur', key, ARGV[7])
redis.call('HSET', P .. 'ucl', key, client)
for _, name in ipairs({{'u', 'ur', 'ucl', 'uc:' .. client}}) do keep(P .. name, seconds) end
return 0
"""
)

# ARGV: prefix, now, set ('u' or 'uc:{client}'), after, limit. Returns {key, client, record, ...}.
_USAGE_RECORDS = (
    _COMMON
    + """
local keys = redis.call('ZRANGEBYLEX', P .. ARGV[3], '(' .. ARGV[4], '+', 'LIMIT', 0, ARGV[5])
local found = {}
for _, key in ipairs(keys) do
  local record = redis.call('HGET', P .. 'ur', key)
  if record then
    table.insert(found, key)
    table.insert(found, redis.call('HGET', P .. 'ucl', key) or '')
    table.insert(found, record)
  end
end
return found
"""
)

# ARGV: prefix, now, then key, add, want, limit, ttl per charge. Returns granted, value per charge.
_CHARGE = (
    _COMMON
    + """
local out = {}
for i = 3, #ARGV, 5 do
  local key = P .. 'g:' .. ARGV[i]
  local add, want, limit = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  local ttl = tonumber(ARGV[i + 4])
  local kept = redis.call('HMGET', key, 'value', 'expires')
  local value = tonumber(kept[1]) or 0
  if (tonumber(kept[2]) or 0) <= now then value = 0 end
  value = math.max(0, value + add)
  local granted = math.max(0, math.min(want, limit - value))
  value = value + granted
  if add ~= 0 or granted > 0 then
    redis.call('HSET', key, 'value', num(value), 'expires', num(now + ttl))
    redis.call('PEXPIRE', key, math.max(1, math.ceil((ttl + TTL_MARGIN) * 1000)))
  end
  out[#out + 1] = num(granted)
  out[#out + 1] = num(value)
end
return out
"""
)


def _number(value: float) -> str:
    """``value`` as a script argument, exactly (``repr`` round-trips a float)."""
    return repr(float(value))


def _encode_grant(grant: Grant) -> bytes:
    return orjson.dumps(
        {
            "session_time_limit": grant.session_time_limit,
            "origin": grant.origin,
            "client": grant.client,
            "resume": grant.resume,
            "ephemeral": grant.ephemeral,
            "claims": grant.claims,
            "uses": grant.uses,
        }
    )


def _decode_grant(raw: ResponseType) -> Grant:
    """The grant :func:`_encode_grant` stored; StoreUnavailable if it is not one."""
    try:
        if not isinstance(raw, bytes | str):
            raise TypeError(type(raw).__name__)
        fields = orjson.loads(raw)
        origin = fields.get("origin")
        resume = fields.get("resume")
        ephemeral = fields.get("ephemeral")
        claims = fields.get("claims")
        for text in (resume, ephemeral, claims):
            if not (text is None or isinstance(text, str)):
                raise TypeError(type(text).__name__)
        return Grant(
            int(fields["session_time_limit"]),
            origin=None if origin is None else str(origin),
            client=str(fields.get("client", "")),
            resume=resume,
            ephemeral=ephemeral,
            claims=claims,
            uses=int(fields.get("uses", 1)),
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        raise StoreUnavailable("Redis state store: a stored grant is malformed") from None


def _who(origin: str | None, client: str) -> bytes:
    """Whom a conversation is kept for, as the script compares it (origin None is JSON null)."""
    return orjson.dumps([origin, client])


def _text(reply: ResponseType) -> str:
    """A stored string (an id, a summary, a record); StoreUnavailable if it is not one."""
    if isinstance(reply, bytes):
        try:
            return reply.decode()
        except UnicodeDecodeError:
            pass
    raise StoreUnavailable("Redis state store: unexpected reply")


def _groups(reply: list[ResponseType], size: int) -> list[tuple[ResponseType, ...]]:
    """A flat reply as tuples of ``size``; StoreUnavailable if it does not divide."""
    if len(reply) % size:
        raise StoreUnavailable("Redis state store: unexpected reply")
    return list(zip(*(reply[n::size] for n in range(size)), strict=True))


def _reply_list(reply: ResponseType) -> list[ResponseType]:
    if not isinstance(reply, list):
        raise StoreUnavailable("Redis state store: unexpected reply")
    return reply


def _reply_float(reply: ResponseType) -> float:
    if not isinstance(reply, bytes | str | int | float):
        raise StoreUnavailable("Redis state store: unexpected reply")
    return float(reply)


def _reply_int(reply: ResponseType) -> int:
    if not isinstance(reply, int):
        raise StoreUnavailable("Redis state store: unexpected reply")
    return reply


class RedisStore:
    """:class:`~liveproxy.store.StateStore` on a Redis server, on ``clock`` time.

    Made by :func:`open_redis_store`, whose client it uses. Every method raises
    :class:`~liveproxy.store.StoreUnavailable` when Redis cannot be reached, fails or does
    not answer within the deadline; the next call tries again (a new connection if needed).
    """

    def __init__(
        self,
        client: coredis.Redis[bytes],
        clock: Callable[[], float],
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        *,
        prefix: str = DEFAULT_PREFIX,
        io_timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._client = client
        self._clock = clock
        self._lease_seconds = lease_seconds
        self._prefix = prefix
        self._deadline = io_timeout * DEADLINE_FACTOR
        self._take_sign_in = client.register_script(_TAKE_SIGN_IN)
        self._admit = client.register_script(_ADMIT)
        self._start_session = client.register_script(_START_SESSION)
        self._ephemeral_grant = client.register_script(_EPHEMERAL_GRANT)
        self._start_native = client.register_script(_START_NATIVE)
        self._renew = client.register_script(_RENEW)
        self._end_session = client.register_script(_END_SESSION)
        self._usage = client.register_script(_USAGE)
        self._keep_conversation = client.register_script(_KEEP_CONVERSATION)
        self._take_conversation = client.register_script(_TAKE_CONVERSATION)
        self._return_conversation = client.register_script(_RETURN_CONVERSATION)
        self._renew_sessions = client.register_script(_RENEW_SESSIONS)
        self._live_sessions = client.register_script(_LIVE_SESSIONS)
        self._mark_session_end = client.register_script(_MARK_SESSION_END)
        self._keep_usage = client.register_script(_KEEP_USAGE)
        self._usage_records = client.register_script(_USAGE_RECORDS)
        self._charge = client.register_script(_CHARGE)

    async def take_sign_in(self, client: str, rate: Rate) -> float:
        reply = await self._run(self._take_sign_in, client, str(rate.count), _number(rate.period))
        return _reply_float(reply)

    async def admit(self, grant: Grant, limits: Limits) -> str | Refused:
        token = secrets.token_urlsafe(32)
        reply = _reply_list(
            await self._run(
                self._admit,
                token_key(token),
                grant.client,
                _encode_grant(grant),
                _number(limits.token_ttl),
                str(limits.max_sessions),
                str(limits.per_client),
            )
        )
        match reply:
            case [b"ok"]:
                return token
            case [b"capacity"]:
                return at_capacity(limits)
            case [b"client", wait]:
                return too_many_sessions(limits, _reply_float(wait))
        raise StoreUnavailable("Redis state store: unexpected reply")

    async def start_session(self, token: str | None, lease_id: str) -> Lease | None:
        if not token:
            return None
        reply = await self._run(
            self._start_session, token_key(token), lease_id, _number(self._lease_seconds)
        )
        if reply is None:
            return None
        return Lease(lease_id, _decode_grant(reply))

    async def ephemeral_grant(self, token: str) -> Grant | None:
        reply = await self._run(self._ephemeral_grant, token_key(token))
        return None if reply is None else _decode_grant(reply)

    async def start_native(
        self, token: str | None, lease_id: str, limits: Limits, *, resuming: bool = False
    ) -> Lease | Refused | None:
        if not token:
            return None
        reply = await self._run(
            self._start_native,
            token_key(token),
            lease_id,
            _number(self._lease_seconds),
            "1" if resuming else "0",
            str(limits.max_sessions),
            str(limits.per_client),
            _number(limits.token_ttl),
        )
        if reply is None:
            return None
        match _reply_list(reply):
            case [b"ok", grant]:
                return Lease(lease_id, _decode_grant(grant))
            case [b"capacity"]:
                return at_capacity(limits)
            case [b"client", wait]:
                return too_many_sessions(limits, _reply_float(wait))
        raise StoreUnavailable("Redis state store: unexpected reply")

    async def renew(self, leases: Collection[Lease]) -> None:
        if not leases:
            return
        pairs: list[str] = []
        for lease in leases:
            pairs += (lease.id, lease.grant.client)
        await self._run(self._renew, _number(self._lease_seconds), *pairs)

    async def end_session(self, lease: Lease) -> None:
        await self._run(self._end_session, lease.id, lease.grant.client)

    async def usage(self) -> Usage:
        reply = _reply_list(await self._run(self._usage))
        if len(reply) != 2:
            raise StoreUnavailable("Redis state store: unexpected reply")
        return Usage(tokens=_reply_int(reply[0]), sessions=_reply_int(reply[1]))

    async def keep_conversation(
        self, token: str, conversation: Conversation, window: float
    ) -> None:
        await self._run(
            self._keep_conversation,
            token_key(token),
            _who(conversation.origin, conversation.client),
            conversation.state,
            _number(window),
        )

    async def take_conversation(
        self, token: str, origin: str | None, client: str
    ) -> Conversation | None:
        reply = await self._run(self._take_conversation, token_key(token), _who(origin, client))
        if reply is None:
            return None
        match reply:
            case [bytes() as raw, expires]:
                try:
                    state = raw.decode()
                except UnicodeDecodeError:
                    raise StoreUnavailable(
                        "Redis state store: a kept conversation is malformed"
                    ) from None
                return Conversation(origin, client, state, _reply_float(expires))
        raise StoreUnavailable("Redis state store: unexpected reply")

    async def return_conversation(self, token: str, conversation: Conversation) -> None:
        await self._run(
            self._return_conversation,
            token_key(token),
            _who(conversation.origin, conversation.client),
            conversation.state,
            _number(conversation.expires_at),
        )

    async def renew_sessions(
        self, leases: Collection[Lease], summaries: Mapping[str, str]
    ) -> frozenset[str]:
        if not leases:
            return frozenset()
        triples: list[str] = []
        for lease in leases:
            triples += (lease.id, lease.grant.client, summaries.get(lease.id, "{}"))
        reply = _reply_list(
            await self._run(self._renew_sessions, _number(self._lease_seconds), *triples)
        )
        return frozenset(_text(i) for i in reply)

    async def live_sessions(self, after: str, limit: int) -> list[LiveSession]:
        reply = _reply_list(await self._run(self._live_sessions, after, str(limit)))
        return [LiveSession(_text(i), _text(s)) for i, s in _groups(reply, 2)]

    async def mark_session_end(self, session_id: str) -> bool:
        return _reply_int(await self._run(self._mark_session_end, session_id)) == 1

    async def keep_usage(self, record: UsageRecord, retention: float) -> None:
        oldest = usage_key_prefix(self._clock() - retention)
        await self._run(
            self._keep_usage,
            oldest,
            _number(retention),
            record.key,
            record.client,
            record.text,
        )

    async def usage_records(
        self, client: str | None, after: str, limit: int, retention: float
    ) -> list[UsageRecord]:
        after = max(after, usage_key_prefix(self._clock() - retention))
        index = "u" if client is None else f"uc:{client}"
        reply = _reply_list(await self._run(self._usage_records, index, after, str(limit)))
        return [
            UsageRecord(_text(key), _text(owner), _text(text))
            for key, owner, text in _groups(reply, 3)
        ]

    async def charge(self, charges: Sequence[Charge]) -> list[Charged]:
        if not charges:
            return []
        arguments: list[str] = []
        for c in charges:
            arguments += (c.key, _number(c.add), _number(c.want), _number(c.limit), _number(c.ttl))
        reply = _reply_list(await self._run(self._charge, *arguments))
        if len(reply) != 2 * len(charges):
            raise StoreUnavailable("Redis state store: unexpected reply")
        return [
            Charged(_reply_float(reply[i]), _reply_float(reply[i + 1]))
            for i in range(0, len(reply), 2)
        ]

    async def _run(self, script: Script[bytes], *args: str | bytes) -> ResponseType:
        """Run ``script`` with the prefix, ``now`` and ``args``.

        Raises :class:`StoreUnavailable` on any Redis or connection error or past the deadline
        (then every pooled connection is dropped, to be made again by the next call).
        """
        arguments: Sequence[str | bytes] = (self._prefix, _number(self._clock()), *args)
        try:
            with trio.fail_after(self._deadline):
                return await script(args=arguments)
        except (TimeoutError, trio.TooSlowError) as exc:
            self._client.connection_pool.disconnect()
            raise StoreUnavailable("Redis state store did not answer in time") from exc
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"Redis state store unreachable: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    """What went wrong, without anything a caller sent (coredis messages carry no arguments)."""
    text = SECRETS.redact(str(exc)).partition("\n")[0][:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@asynccontextmanager
async def open_redis_store(
    url: str,
    clock: Callable[[], float],
    lease_seconds: float,
    *,
    prefix: str = DEFAULT_PREFIX,
    io_timeout: float = DEFAULT_TIMEOUT,
) -> AsyncIterator[RedisStore]:
    """A :class:`RedisStore` on ``url`` (``redis://[:password@]host:port/db``, or ``rediss://``),
    its client closed on exit; enter and exit it in the same task (coredis holds a task group).

    Opening does not connect: with Redis down it succeeds, and the store's calls raise
    :class:`~liveproxy.store.StoreUnavailable` until Redis answers. The URL's password is
    registered with :data:`~liveproxy.redact.SECRETS` (never logged); a malformed URL raises
    :class:`ValueError` without repeating it.
    """
    try:
        password = urlsplit(url).password
        client: coredis.Redis[bytes] = coredis.Redis.from_url(
            url,
            decode_responses=False,
            connect_timeout=io_timeout,
            stream_timeout=io_timeout,
            pool_timeout=io_timeout,
            retry_policy=NoRetryPolicy(),
        )
    except ValueError:
        raise ValueError("malformed Redis URL in STATE_URL") from None
    if password:
        SECRETS.add(password, unquote(password))
    async with client:
        yield RedisStore(client, clock, lease_seconds, prefix=prefix, io_timeout=io_timeout)

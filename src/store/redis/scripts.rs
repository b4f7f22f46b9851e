//! The Lua scripts of the shared store. Each runs atomically on the Redis server, and every key it
//! touches is named in `KEYS` and shares one hash tag, so they also run on a Redis Cluster.

use std::sync::LazyLock;

use redis::Script;

/// Extends the lease by `ARGV[2]` ms if `ARGV[1]` still holds it. Returns 1, or 0 if lost.
pub(super) static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
",
    )
});

/// Deletes the lease if `ARGV[1]` still holds it: a holder never frees a successor's lease.
pub(super) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
",
    )
});

/// The fenced commit. `KEYS[1]` the lease, `KEYS[2]` the token hash. `ARGV`: owner, the version
/// the holder read, the new version, the sealed token, its TTL in ms, the channel to notify and the command that does
/// (`PUBLISH`, or `SPUBLISH` on a Cluster).
/// Writes only while `ARGV[1]` holds the lease and the stored version is still the one read, and
/// only a higher version. Returns the new version, -1 (lease lost), -2 (the store moved on), or
/// -3 (the version would not increase).
pub(super) static COMMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
local current = tonumber(redis.call('HGET', KEYS[2], 'version') or '0')
if current ~= tonumber(ARGV[2]) then
  return -2
end
local new = tonumber(ARGV[3])
if new <= current then
  return -3
end
redis.call('HSET', KEYS[2], 'version', ARGV[3], 'sealed', ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call(ARGV[7], ARGV[6], ARGV[3])
return new
",
    )
});

/// GCRA with wait semantics and caller classes, on Redis's clock (so replicas' clocks do not
/// matter), for a batch of requests of one class in their order. `KEYS`: the bucket (its
/// theoretical arrival time, µs), the pause (until, µs), the marks of waiting `standard` and
/// `batch` requests, the count of slots granted since batch last had one, and a slot set aside for
/// batch (µs). `ARGV`: the slot period (µs), the burst, the class (0 interactive, 1 standard, 2
/// batch), whether the class may reserve ahead (`1`, the tenant's highest class) or only take a
/// slot that is due (`0`), batch's share as "one slot in `every`", the longest pause honoured (µs;
/// a stored pause longer than that is cut to it, an unreadable one ignored), then each request's longest
/// acceptable wait (µs), oldest first.
///
/// Returns a `code, wait_us` pair per request, in order, each as if the requests had called one
/// after the other at the same instant: `1`, a slot is reserved, send after the wait; `0`, the next
/// slot is further than allowed, nothing reserved (the honest Retry-After); `2`, not due yet,
/// nothing reserved, ask again after that long (a class that does not reserve ahead; every later
/// request of the batch gets the same answer).
///
/// So the highest class is never pushed back behind reservations of the lower ones: they hold at
/// most the slot that is due now. Batch also waits while `standard` requests wait anywhere, but
/// while batch waits, every `every`-th slot granted to a higher class sets the next one aside for
/// batch. Stored values that are not numbers count as absent.
pub(super) static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period = tonumber(ARGV[1])
local tolerance = (tonumber(ARGV[2]) - 1) * period
local class = tonumber(ARGV[3])
local ahead = ARGV[4] == '1'
local every = tonumber(ARGV[5])
local linger = 2 * period + 50000
local function ms(us) return math.floor(us / 1000) + 1 end
local function mark(key, wait)
  local fresh = redis.call('SET', key, '1', 'PX', ms(wait + linger), 'NX')
  if not fresh then
    redis.call('PEXPIRE', key, ms(wait + linger))
  elseif key == KEYS[4] then
    redis.call('DEL', KEYS[5])
  end
end
local tat = math.max(tonumber(redis.call('GET', KEYS[1])) or 0, now)
local pause = tonumber(redis.call('GET', KEYS[2])) or 0
if pause > now + tonumber(ARGV[6]) then
  pause = now + tonumber(ARGV[6])
  redis.call('SET', KEYS[2], string.format('%d', pause), 'PX', ms(tonumber(ARGV[6])))
end
local reserved = false
local function one(max_wait)
  if class == 2 then
    local aside = tonumber(redis.call('GET', KEYS[6]))
    if aside then
      local wait = math.max(aside, pause, now) - now
      if wait <= max_wait then
        redis.call('DEL', KEYS[6], KEYS[5])
        return 1, wait
      end
    end
  end
  local at = math.max(tat - tolerance, pause, now)
  local wait = at - now
  if wait > max_wait then
    return 0, wait
  end
  if not ahead then
    if wait > 1000 then
      mark(KEYS[2 + class], wait)
      return 2, math.min(wait, period)
    end
    if class == 2 and redis.call('EXISTS', KEYS[3]) == 1 then
      mark(KEYS[4], period)
      return 2, period
    end
  end
  local new_tat = math.max(tat, at) + period
  if class == 2 then
    redis.call('DEL', KEYS[5])
  elseif redis.call('EXISTS', KEYS[4]) == 1 then
    if redis.call('INCR', KEYS[5]) + 1 >= every then
      local aside = math.max(new_tat - tolerance, pause, now)
      redis.call('SET', KEYS[6], string.format('%d', aside), 'PX', ms(aside - now + linger))
      redis.call('DEL', KEYS[5])
      new_tat = math.max(new_tat, aside) + period
    else
      redis.call('PEXPIRE', KEYS[5], 3600000)
    end
  end
  tat = new_tat
  reserved = true
  return 1, wait
end
local answers = {}
local i = 7
while i <= #ARGV do
  local code, wait = one(tonumber(ARGV[i]))
  answers[#answers + 1] = code
  answers[#answers + 1] = wait
  if code == 2 then
    for _ = i + 1, #ARGV do
      answers[#answers + 1] = 2
      answers[#answers + 1] = wait
    end
    break
  end
  i = i + 1
end
if reserved then
  redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', ms(tat - now) + 1000)
end
return answers
",
    )
});

/// Pauses the bucket for `ARGV[1]` µs from Redis's now, unless a longer pause is in force, and
/// announces the pause's length (µs from now, so each replica adds it to its own clock on
/// receipt) on `ARGV[2]` with the command `ARGV[3]` (`PUBLISH`, or `SPUBLISH` on a Cluster).
/// `KEYS[1]` the pause key. Returns the µs left of the pause in force.
pub(super) static PAUSE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local untl = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1])) or 0
if current >= untl then
  return current - now
end
redis.call('SET', KEYS[1], string.format('%d', untl), 'PX', math.floor(tonumber(ARGV[1]) / 1000) + 1000)
redis.call(ARGV[3], ARGV[2], string.format('%d', untl - now))
return untl - now
",
    )
});

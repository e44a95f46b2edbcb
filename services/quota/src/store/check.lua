-- Checks a batch of costs against their limits, atomically: the rule of
-- window.rs (a bucketed sliding window).
--
-- One hash per subject: a field per slice index holding the cost counted
-- in that slice, and three bookkeeping fields so a check touches only what
-- changed instead of reading every slice:
--   s  the sum of the kept slices,
--   o  no slice below this index is kept,
--   n  the newest slice with a count.
--
-- A batch holds two kinds of entries:
--   c  a check: admit `cost` if it fits; then, if `want` > 0, also count
--      up to `want` more units (at most 1/8 of what is left) as a lease
--      the replica may admit itself within the current slice;
--   g  a give-back: `amount` leased units of slice `extra` went unused.
--
-- KEYS[i]: the hash of entry i.
-- ARGV[1]: now, in milliseconds.
-- ARGV[2 + 6(i-1) ..]: op, slice length (ms), period (ms), limit,
--   amount (the cost), extra (c: want; g: the slice index) of entry i.
-- Returns, per entry: allowed (0/1), used after the decision (the lease
-- not included), reset (ms), retry (ms; -1 when the cost exceeds the limit
-- itself), units leased. A give-back returns five zeros.
local LEASE_SHARE = 8
local now = tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  local base = 2 + 6 * (i - 1)
  local op = ARGV[base]
  local slice = tonumber(ARGV[base + 1])
  local period = tonumber(ARGV[base + 2])
  local limit = tonumber(ARGV[base + 3])
  local cost = tonumber(ARGV[base + 4])
  local extra = tonumber(ARGV[base + 5])
  if op == 'g' then
    local have = tonumber(redis.call('HGET', key, extra))
    if have ~= nil and have > 0 then
      local give = math.min(cost, have)
      redis.call('HINCRBY', key, extra, -give)
      redis.call('HINCRBY', key, 's', -give)
    end
    for _ = 1, 5 do
      out[#out + 1] = 0
    end
  else
    local current = math.floor(now / slice)
    -- Slices below this one lie wholly outside (now - period, now].
    local oldest = math.floor(math.max(now - period, 0) / slice)

    local head = redis.call('HMGET', key, 's', 'o', 'n')
    local used = tonumber(head[1]) or 0
    local low = tonumber(head[2])
    local newest = tonumber(head[3])
    local pruned = false
    if newest ~= nil and newest < oldest then
      -- Everything counted has left the window.
      redis.call('DEL', key)
      used, low, newest = 0, nil, nil
    elseif low ~= nil and low < oldest then
      local stale = {}
      for index = low, oldest - 1 do
        stale[#stale + 1] = index
      end
      local counts = redis.call('HMGET', key, unpack(stale))
      for j = 1, #stale do
        used = used - (tonumber(counts[j]) or 0)
      end
      redis.call('HDEL', key, unpack(stale))
      low = oldest
      pruned = true
    end

    local allowed = used + cost <= limit
    local leased = 0
    if allowed then
      used = used + cost
      if extra > 0 then
        leased = math.min(extra, math.floor((limit - used) / LEASE_SHARE))
      end
      redis.call('HINCRBY', key, current, cost + leased)
      -- Batches of replicas reach Redis out of order (around a slice
      -- boundary, or with clocks apart): the kept range only widens, so
      -- `o` never passes `n`.
      if low == nil or current < low then
        low = current
      end
      if newest == nil or current > newest then
        newest = current
      end
      redis.call('HSET', key, 's', used + leased, 'o', low, 'n', newest)
    elseif pruned then
      redis.call('HSET', key, 's', used, 'o', low)
    end

    local reset = 0
    if newest ~= nil then
      local idle_at = (newest + 1) * slice + period
      reset = math.max(idle_at - now, 0)
      if allowed then
        -- Relative to the caller's clock, with a second to spare.
        redis.call('PEXPIRE', key, idle_at - now + 1000)
      end
    end

    local retry = 0
    if not allowed then
      if cost > limit then
        retry = -1
      else
        -- Forget slices oldest first until the cost fits.
        local indices = {}
        for index = low, newest do
          indices[#indices + 1] = index
        end
        local counts = redis.call('HMGET', key, unpack(indices))
        local freed = limit - used
        for j = 1, #indices do
          freed = freed + (tonumber(counts[j]) or 0)
          if freed >= cost then
            retry = math.max((indices[j] + 1) * slice + period - now, 0)
            break
          end
        end
      end
    end
    out[#out + 1] = allowed and 1 or 0
    out[#out + 1] = used
    out[#out + 1] = reset
    out[#out + 1] = retry
    out[#out + 1] = leased
  end
end
return out

-- Checks a batch of costs against their limits, atomically: the same rule
-- as window.rs (a bucketed sliding window), over one hash per subject whose
-- fields are slice indices and values the cost counted in that slice.
--
-- KEYS[i]: the hash of check i.
-- ARGV[1]: now, in milliseconds.
-- ARGV[2 + 4(i-1) ..]: slice length (ms), period (ms), limit, cost of check i.
-- Returns, per check: allowed (0/1), used after the decision, reset (ms),
-- retry (ms, -1 when the cost exceeds the limit itself).
local now = tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  local base = 2 + 4 * (i - 1)
  local slice = tonumber(ARGV[base])
  local period = tonumber(ARGV[base + 1])
  local limit = tonumber(ARGV[base + 2])
  local cost = tonumber(ARGV[base + 3])
  local current = math.floor(now / slice)
  local oldest = math.floor(math.max(now - period, 0) / slice)

  local flat = redis.call('HGETALL', key)
  local kept = {}
  local stale = {}
  local used = 0
  for j = 1, #flat, 2 do
    local index = tonumber(flat[j])
    if index < oldest then
      stale[#stale + 1] = flat[j]
    else
      local counted = tonumber(flat[j + 1])
      used = used + counted
      kept[#kept + 1] = { index, counted }
    end
  end
  if #stale > 0 then
    redis.call('HDEL', key, unpack(stale))
  end
  table.sort(kept, function(a, b) return a[1] < b[1] end)

  local allowed = used + cost <= limit
  local newest = kept[#kept] and kept[#kept][1] or nil
  if allowed then
    redis.call('HINCRBY', key, current, cost)
    used = used + cost
    newest = current
  end
  local idle_at = 0
  if newest ~= nil then
    idle_at = (newest + 1) * slice + period
    -- Relative to the caller's clock, with a second to spare.
    redis.call('PEXPIRE', key, idle_at - now + 1000)
  end
  local reset = math.max(idle_at - now, 0)

  local retry = 0
  if not allowed then
    if cost > limit then
      retry = -1
    else
      local freed = limit - used
      for _, s in ipairs(kept) do
        freed = freed + s[2]
        if freed >= cost then
          retry = math.max((s[1] + 1) * slice + period - now, 0)
          break
        end
      end
    end
  end
  out[#out + 1] = allowed and 1 or 0
  out[#out + 1] = used
  out[#out + 1] = reset
  out[#out + 1] = retry
end
return out

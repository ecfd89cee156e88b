-- Milliseconds on Redis's clock, so that nodes with skewed clocks agree on when a lease lapses.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- A job's record (moved to the current epoch first if need be: lib/load.lua).
-- KEYS: job, generation. ARGV: candidate generation, epoch gap. Returns the record fields, or nil.
--! include lib/load.lua
return load(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]), true)

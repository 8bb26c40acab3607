-- wrk script: single-reaction POST /emoji requests, each with the token of one of the users in
-- $WRK_TOKENS (one JWT per line, line i for user wrk<i>), cycled. The body names the token's
-- user, so the same requests are valid with tokens off (the header is then ignored): the two
-- runs of bench/wrk-tokens.sh differ only in what the server does.
local emojis = { "🔥", "😂", "❤️", "👏", "🎉" }
local tokens = {}
for line in io.lines(os.getenv("WRK_TOKENS")) do
  tokens[#tokens + 1] = "Bearer " .. line
end
local n = 0
request = function()
  n = n + 1
  local user = n % #tokens + 1
  -- wrk.format takes these headers instead of wrk.headers, not beside them.
  local headers = { ["Content-Type"] = "application/json", ["Authorization"] = tokens[user] }
  local body = string.format('{"user_id":"wrk%d","emoji_type":"%s"}', user, emojis[n % #emojis + 1])
  return wrk.format("POST", "/emoji", headers, body)
end

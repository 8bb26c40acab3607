-- wrk script: single-reaction POST /emoji requests with tokens, cycling through the users'
-- tokens in $WRK_TOKENS (one JWT per line); the body has no user_id (the token's sub is the user).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local emojis = { "🔥", "😂", "❤️", "👏", "🎉" }
local tokens = {}
for line in io.lines(os.getenv("WRK_TOKENS")) do
  tokens[#tokens + 1] = "Bearer " .. line
end
local n = 0
request = function()
  n = n + 1
  local headers = { ["Authorization"] = tokens[n % #tokens + 1] }
  local body = string.format('{"emoji_type":"%s"}', emojis[n % #emojis + 1])
  return wrk.format(nil, "/emoji", headers, body)
end

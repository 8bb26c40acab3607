-- wrk script: single-reaction POST /emoji requests, each from another user.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local emojis = { "🔥", "😂", "❤️", "👏", "🎉" }
local n = 0
request = function()
  n = n + 1
  local body = string.format('{"user_id":"wrk%d","emoji_type":"%s"}', n, emojis[n % #emojis + 1])
  return wrk.format(nil, "/emoji", nil, body)
end

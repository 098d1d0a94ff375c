-- wrk script: every request goes to a random one of N hosts (app0.bench .. app{N-1}.bench),
-- so the interceptor's route lookup sees a different key each time instead of one hot entry.
-- N comes from the command line: wrk ... -s many_hosts.lua -- 10000
local hosts = {}

function init(args)
    local n = tonumber(args[1]) or 1
    for i = 0, n - 1 do
        hosts[i + 1] = wrk.format("GET", "/", { Host = "app" .. i .. ".bench" })
    end
    math.randomseed(os.time())
end

function request()
    return hosts[math.random(#hosts)]
end

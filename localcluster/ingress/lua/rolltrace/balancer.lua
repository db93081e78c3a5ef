-- The workers' side of the dynamic mode, after ingress-nginx's
-- rootfs/etc/nginx/lua/balancer.lua: each worker keeps its own copy of the endpoint lists,
-- refreshed from the shared dict once when it starts (so a reload's new workers begin with the
-- last list POSTed) and then on its own timer every sync_interval_s (ingress-nginx's
-- BACKENDS_SYNC_INTERVAL, 1 s). balancer_by_lua picks a peer round robin (ingress-nginx's
-- default load-balance) from the worker's current list.
--
-- A request keeps the list it began with (the rewrite phase pins it in ngx.ctx, as
-- ingress-nginx's get_balancer does), and a retry goes to a peer the request has not tried:
-- one more try is asked for only while such a peer remains, and nginx caps the total at
-- proxy_next_upstream_tries, so a request gets at most min(peers, tries) attempts, as nginx's
-- own round robin gives in reload mode. (ingress-nginx asks for one more try on every attempt,
-- so it may retry a failed peer.)
--
-- Truth: when a worker installs a new version it appends an ingress-worker-synced line
-- (version, worker_pid) to the Pod's truth.jsonl: the moment traffic really switched.

local ngx_balancer = require("ngx.balancer")
local cjson = require("cjson.safe")

local data = ngx.shared.configuration_data

local _M = {}
local settings = {} -- from init(): sync_interval_s, truth_path, truth_source
local backends = {} -- backend name → { peers = { {host, port}, ... }, next = index }
local installed_version = nil

function _M.init(config)
  settings = assert(cjson.decode(config), "the balancer's settings are not JSON")
end

-- Realtime in nanoseconds, as a decimal string (a double cannot hold it exactly); ngx.now()
-- has millisecond resolution, as the access log's $msec.
local function now_ns()
  ngx.update_time()
  return string.format("%d000000", math.floor(ngx.now() * 1000 + 0.5))
end

-- One short line, one write() on a file opened with O_APPEND (stdio's "a"), so it never
-- interleaves with the controller's own truth lines.
local function record_switch(version)
  if not settings.truth_path then
    return
  end
  local line = string.format(
    '{"ts_ns":%s,"source":%s,"event":"ingress-worker-synced","version":%d,"worker_pid":%d}\n',
    now_ns(), cjson.encode(settings.truth_source), version, ngx.worker.pid())
  local file, err = io.open(settings.truth_path, "a")
  if not file then
    ngx.log(ngx.ERR, "cannot append to ", settings.truth_path, ": ", err)
    return
  end
  file:write(line)
  file:close()
end

local function peers_of(backend)
  local peers = {}
  for _, endpoint in ipairs(backend.endpoints or {}) do
    peers[#peers + 1] = { endpoint.address, tonumber(endpoint.port) }
  end
  return peers
end

-- A backend without endpoints gets no entry, so its requests are answered 503, as
-- ingress-nginx's sync_backend drops its balancer.
local function install(list)
  local fresh = {}
  for _, backend in ipairs(list) do
    local peers = peers_of(backend)
    if #peers > 0 then
      local previous = backends[backend.name]
      fresh[backend.name] = { peers = peers, next = previous and previous.next or 1 }
    end
  end
  backends = fresh
end

local function sync_backends(premature)
  if premature or data:get("version") == installed_version then
    return
  end
  local stored = data:get("backends")
  local space = stored and stored:find(" ", 1, true)
  if not space then
    return
  end
  local version = tonumber(stored:sub(1, space - 1))
  if version == installed_version then
    return
  end
  local list, err = cjson.decode(stored:sub(space + 1))
  if type(list) ~= "table" then
    ngx.log(ngx.ERR, "could not parse backends version ", version, ": ", err)
    return
  end
  install(list)
  installed_version = version
  record_switch(version)
end

function _M.init_worker()
  sync_backends(false)
  local ok, err = ngx.timer.every(settings.sync_interval_s, sync_backends)
  if not ok then
    ngx.log(ngx.ERR, "cannot start the backends sync timer: ", err)
  end
end

function _M.rewrite()
  local backend = backends[ngx.var.proxy_upstream_name]
  if not backend then
    return ngx.exit(ngx.HTTP_SERVICE_UNAVAILABLE)
  end
  ngx.ctx.backend = backend
  ngx.ctx.tried = {}
  ngx.ctx.attempts = 0
end

-- A request's first attempt takes the round robin's next turn; a retry takes the first peer
-- from there that this request has not tried, without using up a turn, as nginx's own round
-- robin skips tried peers (ngx_http_upstream_get_peer). ingress-nginx's round_robin takes a
-- turn on every attempt, so with one refusing peer of two, every request would meet it first.
local function pick(backend, tried, first)
  local peers = backend.peers
  local start = (backend.next - 1) % #peers
  if first then
    backend.next = start + 2
  end
  for offset = 0, #peers - 1 do
    local peer = peers[(start + offset) % #peers + 1]
    if not tried[peer] then
      return peer
    end
  end
  error("every peer was tried already") -- balance() asks for a retry only while one remains
end

function _M.balance()
  local ctx = ngx.ctx
  local peer = pick(ctx.backend, ctx.tried, ctx.attempts == 0)
  ctx.tried[peer] = true
  ctx.attempts = ctx.attempts + 1
  if ctx.attempts < #ctx.backend.peers then
    ngx_balancer.set_more_tries(1) -- nginx lowers it to what proxy_next_upstream_tries allows
  end
  local ok, err = ngx_balancer.set_current_peer(peer[1], peer[2])
  if not ok then
    ngx.log(ngx.ERR, "cannot set the upstream peer ", peer[1], ":", peer[2], ": ", err)
  end
end

return _M

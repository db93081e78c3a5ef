-- The controller's side of the dynamic mode: the local-only endpoint the ingress controller
-- POSTs every backend's endpoint list to (JSON), as ingress-nginx's
-- rootfs/etc/nginx/lua/configuration.lua handle_backends does. The list is kept in the shared
-- dict configuration_data, which every worker reads on its own timer (rolltrace.balancer).
--
-- Unlike ingress-nginx, which stamps a POST with ngx.time() (one-second resolution, so a second
-- POST within the same second can go unseen until a later one), each POST gets the next
-- version number, stored in one value with the list ("<version> <json>") so a worker never
-- pairs a list with another POST's version.

local cjson = require("cjson.safe")

local data = ngx.shared.configuration_data

local _M = {}

local function request_body()
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if body then
    return body
  end
  local name = ngx.req.get_body_file() -- a body larger than client_body_buffer_size
  if not name then
    return nil
  end
  local file = io.open(name, "rb")
  if not file then
    return nil
  end
  body = file:read("*a")
  file:close()
  return body
end

local function store(body)
  local version, err = data:incr("version", 1, 0)
  if not version then
    return nil, err
  end
  local ok, set_err = data:safe_set("backends", version .. " " .. body)
  if not ok then
    return nil, set_err
  end
  return version
end

-- GET: the stored "<version> <json>" (tests, debugging); POST: a new list, answered 201 with
-- its version, which the controller writes into its ingress-synced truth line.
function _M.backends()
  local method = ngx.req.get_method()
  if method == "GET" then
    ngx.print(data:get("backends") or "")
    return
  end
  if method ~= "POST" then
    return ngx.exit(ngx.HTTP_NOT_ALLOWED)
  end
  local body = request_body()
  if not body or type(cjson.decode(body)) ~= "table" then
    ngx.status = ngx.HTTP_BAD_REQUEST
    ngx.print("the body must be a JSON list of backends")
    return
  end
  local version, err = store(body)
  if not version then
    ngx.log(ngx.ERR, "dynamic-configuration: could not store the backends: ", err)
    return ngx.exit(ngx.HTTP_INTERNAL_SERVER_ERROR)
  end
  ngx.status = ngx.HTTP_CREATED
  ngx.print(version)
end

return _M

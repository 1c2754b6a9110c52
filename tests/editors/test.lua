-- Run by tests/editors/run.sh: Neovim's built-in LSP client (0.7+) on `dsl lsp`.
local work = os.getenv('SDE_WORK')
local dll = os.getenv('SDE_DSL_DLL')
local failures = 0

local function say(s) io.stdout:write(s .. '\n') end
local function check(ok, what, detail)
  if ok then say('PASS ' .. what) else failures = failures + 1; say('FAIL ' .. what .. ': ' .. tostring(detail)) end
end
local function finish()
  vim.lsp.stop_client(vim.lsp.get_active_clients(), true)
  if failures == 0 then vim.cmd('qall!') else vim.cmd('cquit 1') end
end

local ok, err = pcall(function()
  vim.cmd('edit ' .. work .. '/ou.sde')
  local buf = vim.api.nvim_get_current_buf()
  local client = vim.lsp.start_client({ name = 'dsl', cmd = { 'dotnet', dll, 'lsp' }, root_dir = work })
  check(client ~= nil, 'the client started', client)
  vim.lsp.buf_attach_client(buf, client)

  -- where the mistake is, as the buffer has it (0-based line and column)
  local lines = vim.api.nvim_buf_get_lines(buf, 0, -1, false)
  local mline, mcol
  for i, l in ipairs(lines) do
    local c = l:find('thetta', 1, true)
    if c then mline, mcol = i - 1, c - 1 end
  end

  vim.wait(30000, function() return #vim.diagnostic.get(buf) > 0 end, 50)
  local ds = vim.diagnostic.get(buf)
  check(#ds == 1, 'one diagnostic', vim.inspect(ds))
  if #ds >= 1 then
    local d = ds[1]
    check(d.lnum == mline and d.col == mcol, 'the diagnostic at the line and column of the mistake (' .. mline .. ':' .. mcol .. ')', d.lnum .. ':' .. d.col)
    check(d.severity == vim.diagnostic.severity.ERROR, 'an error', d.severity)
    check(d.message:find("did you mean 'theta'", 1, true) ~= nil, 'did-you-mean in the message', d.message)
  end

  -- fix it as a user would: the client sends didChange, the server clears the diagnostic
  local fixed = lines[mline + 1]:gsub('thetta', 'theta')
  vim.api.nvim_buf_set_lines(buf, mline, mline + 1, false, { fixed })
  vim.wait(30000, function() return #vim.diagnostic.get(buf) == 0 end, 50)
  check(#vim.diagnostic.get(buf) == 0, 'fixed: no diagnostics', vim.inspect(vim.diagnostic.get(buf)))

  -- hover on sigma in `sigma dW`
  local sline, scol
  for i, l in ipairs(vim.api.nvim_buf_get_lines(buf, 0, -1, false)) do
    local c = l:find('sigma dW', 1, true)
    if c then sline, scol = i - 1, c - 1 end
  end
  local uri = vim.uri_from_bufnr(buf)
  local hover = vim.lsp.buf_request_sync(buf, 'textDocument/hover',
    { textDocument = { uri = uri }, position = { line = sline, character = scol + 1 } }, 10000)
  local hv = hover and hover[client] and hover[client].result and hover[client].result.contents.value or ''
  check(hv:find('param sigma = 0.5 in (0, inf)', 1, true) ~= nil, 'hover: the param, its declaration and domain', hv)
  check(hv:find('value in set `default`: 0.5', 1, true) ~= nil, 'hover: its value in the default set', hv)

  -- completion inside `simulate { ... }`: the settings
  local pline
  for i, l in ipairs(vim.api.nvim_buf_get_lines(buf, 0, -1, false)) do
    if l:find('simulate {', 1, true) then pline = i - 1 end
  end
  local comp = vim.lsp.buf_request_sync(buf, 'textDocument/completion',
    { textDocument = { uri = uri }, position = { line = pline, character = 11 } }, 10000)
  local labels = {}
  local items = comp and comp[client] and comp[client].result and comp[client].result.items or {}
  for _, it in ipairs(items) do labels[it.label] = true end
  check(labels['paths'] and labels['dt'] and labels['T'] and labels['seed'], 'completion: the simulate settings', vim.inspect(vim.tbl_keys(labels)))

  -- formatting, applied to the buffer by the client
  vim.lsp.buf.formatting_sync(nil, 10000)
  local expected = vim.fn.readfile(work .. '/expected.sde')
  local got = vim.api.nvim_buf_get_lines(buf, 0, -1, false)
  check(vim.deep_equal(got, expected), 'formatting applied: the buffer is `dsl format`\'s output', table.concat(got, '\n'))
end)
check(ok, 'the script ran', err)
finish()

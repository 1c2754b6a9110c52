// The Sde extension: starts `dsl lsp` (settings sde.server.command and sde.server.args) and connects
// VS Code's language client to it over stdio. Highlighting comes from syntaxes/sde.tmLanguage.json.
const vscode = require('vscode');
const { LanguageClient } = require('vscode-languageclient/node');

let client;

function activate(context) {
  const config = vscode.workspace.getConfiguration('sde');
  const server = { command: config.get('server.command', 'dsl'), args: config.get('server.args', ['lsp']) };
  client = new LanguageClient('sde', 'Sde language server', { run: server, debug: server }, {
    documentSelector: [{ scheme: 'file', language: 'sde' }, { scheme: 'untitled', language: 'sde' }]
  });
  context.subscriptions.push(client);
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };

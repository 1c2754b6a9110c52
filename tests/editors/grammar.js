// Tokenises examples with editors/vscode/syntaxes/sde.tmLanguage.json through VS Code's own
// TextMate engine (vscode-textmate + vscode-oniguruma, installed by grammar.sh) and checks the
// scopes of a few tokens. Usage: node grammar.js ROOT (NODE_PATH: where the packages are).
const fs = require('fs');
const path = require('path');
const vsctm = require('vscode-textmate');
const oniguruma = require('vscode-oniguruma');

const root = process.argv[2];
const wasm = fs.readFileSync(require.resolve('vscode-oniguruma/release/onig.wasm')).buffer;
let failures = 0;
const check = (ok, what, detail) => {
  console.log((ok ? 'PASS ' : 'FAIL ') + what + (ok ? '' : ': ' + detail));
  if (!ok) failures++;
};

oniguruma.loadWASM(wasm).then(async () => {
  const registry = new vsctm.Registry({
    onigLib: Promise.resolve({ createOnigScanner: (s) => new oniguruma.OnigScanner(s), createOnigString: (s) => new oniguruma.OnigString(s) }),
    loadGrammar: async () => vsctm.parseRawGrammar(fs.readFileSync(path.join(root, 'editors/vscode/syntaxes/sde.tmLanguage.json'), 'utf8'), 'sde.tmLanguage.json'),
  });
  const grammar = await registry.loadGrammar('source.sde');
  // every token of every example: (text, innermost scope)
  const tokensOf = (text) => {
    let state = vsctm.INITIAL;
    const out = [];
    for (const line of text.split('\n')) {
      const r = grammar.tokenizeLine(line, state);
      for (const t of r.tokens) out.push([line.substring(t.startIndex, t.endIndex), t.scopes[t.scopes.length - 1]]);
      state = r.ruleStack;
    }
    return out;
  };
  const ou = tokensOf(fs.readFileSync(path.join(root, 'examples/ou_response.sde'), 'utf8'));
  const scopeOf = (text) => (ou.find(([t]) => t === text) || [text, '(none)'])[1];
  check(scopeOf('model') === 'storage.type.sde', 'model: storage.type', scopeOf('model'));
  check(scopeOf('OU') === 'entity.name.type.sde', 'the model name: entity.name.type', scopeOf('OU'));
  check(scopeOf('theta') === 'variable.other.declaration.sde', 'a declared param: variable.other.declaration', scopeOf('theta'));
  check(scopeOf('dW') === 'variable.language.differential.sde', 'dW: a differential', scopeOf('dW'));
  check(scopeOf('0.5') === 'constant.numeric.sde', '0.5: a number', scopeOf('0.5'));
  check(scopeOf('pathwise') === 'support.constant.method.sde', 'pathwise: a method', scopeOf('pathwise'));
  check(scopeOf('paths') === 'variable.parameter.setting.sde', 'paths: a setting', scopeOf('paths'));
  check(ou[0][1] === 'comment.line.double-slash.sde', 'the first line: a comment', ou[0][1]);
  const block = tokensOf('model M { /* a\n b */ state x }');
  check(block.some(([t, s]) => t === ' b ' && s === 'comment.block.sde'), 'a block comment across lines', JSON.stringify(block));
  // every example tokenises without an error
  for (const f of fs.readdirSync(path.join(root, 'examples')).filter((f) => f.endsWith('.sde'))) {
    try { tokensOf(fs.readFileSync(path.join(root, 'examples', f), 'utf8')); } catch (e) { check(false, f, e); }
  }
  check(true, 'every example tokenised');
  process.exit(failures === 0 ? 0 : 1);
}).catch((e) => { console.log('FAIL ' + e); process.exit(1); });

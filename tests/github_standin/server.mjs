// A local stand-in for GitHub's OAuth web flow and the few REST API endpoints the sidecar's
// GitHub connector reads. GitHub cannot be reached from the test machines; this replaces it at
// that boundary only, speaking the same wire format (documented at docs.github.com: "Authorizing
// OAuth apps" and the REST "users", "emails", "orgs" and "teams" endpoints).
//
//   node tests/github_standin/server.mjs      (PORT and the app settings from the environment)
//
// Users (users.json) marked "withheld" get 403 from /user/emails, /user/orgs and /user/teams.
// Environment: PORT (default 9091), GITHUB_CLIENT_ID (default standin-client),
// GITHUB_CLIENT_SECRET (default standin-secret), GITHUB_USERS (default users.json here).
// The sidecar points `github_url` and `github_api_url` at http://127.0.0.1:$PORT.
//
//   GET  /login/oauth/authorize        a plain HTML form: which user signs in (no password)
//   POST /login/oauth/authorize        redirects to redirect_uri with code and state
//   POST /login/oauth/access_token     code (+ PKCE verifier) -> {access_token}; errors as GitHub
//                                      sends them: status 200 with {"error": ...}
//   GET  /user, /user/emails, /user/orgs, /user/teams   with Authorization: Bearer|token <token>
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const env = process.env;
const port = Number(env.PORT || 9091);
const clientId = env.GITHUB_CLIENT_ID || 'standin-client';
const clientSecret = env.GITHUB_CLIENT_SECRET || 'standin-secret';
const users = JSON.parse(readFileSync(env.GITHUB_USERS || join(here, 'users.json'), 'utf8'));

const codes = new Map(); // code -> { user, redirectUri, challenge, expires }
const tokens = new Map(); // token -> user

const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function send(res, status, body, type = 'application/json; charset=utf-8') {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(typeof body === 'string' ? body : JSON.stringify(body));
}

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function authorizePage(res, params, message) {
  const hidden = [...params].map(([k, v]) => `<input type="hidden" name="${escapeHtml(k)}" value="${escapeHtml(v)}">`).join('\n');
  send(res, message ? 400 : 200, `<!doctype html>
<html><head><meta charset="utf-8"><title>Authorize application</title></head><body>
<h1>GitHub stand-in: authorize ${escapeHtml(params.get('client_id') || '')}</h1>
${message ? `<p class="error">${escapeHtml(message)}</p>` : ''}
<form method="post" action="/login/oauth/authorize">
${hidden}
<label>Login <input name="login"></label>
<button type="submit">Authorize</button>
</form></body></html>
`, 'text/html; charset=utf-8');
}

function bearer(req) {
  const m = /^(?:bearer|token) (.+)$/i.exec(req.headers.authorization || '');
  return m ? tokens.get(m[1]) : undefined;
}

async function handle(req, res) {
  const url = new URL(req.url, `http://127.0.0.1:${port}`);
  const route = `${req.method} ${url.pathname}`;
  if (route === 'GET /login/oauth/authorize') {
    if (url.searchParams.get('client_id') !== clientId) return authorizePage(res, url.searchParams, 'unknown client_id');
    return authorizePage(res, url.searchParams, '');
  }
  if (route === 'POST /login/oauth/authorize') {
    const form = await readForm(req);
    const user = users.find((u) => u.login === form.get('login'));
    if (!user || form.get('client_id') !== clientId) return authorizePage(res, form, 'unknown login or client');
    const code = randomBytes(16).toString('hex');
    codes.set(code, {
      user,
      redirectUri: form.get('redirect_uri'),
      challenge: form.get('code_challenge'),
      expires: Date.now() + 600_000,
    });
    const target = new URL(form.get('redirect_uri'));
    target.searchParams.set('code', code);
    if (form.get('state')) target.searchParams.set('state', form.get('state'));
    res.writeHead(302, { location: target.toString() });
    return res.end();
  }
  if (route === 'POST /login/oauth/access_token') {
    const form = await readForm(req);
    if (form.get('client_id') !== clientId || form.get('client_secret') !== clientSecret) {
      return send(res, 200, { error: 'incorrect_client_credentials' });
    }
    const grant = codes.get(form.get('code'));
    codes.delete(form.get('code'));
    if (!grant || grant.expires < Date.now() || grant.redirectUri !== form.get('redirect_uri')) {
      return send(res, 200, { error: 'bad_verification_code' });
    }
    if (grant.challenge) {
      const computed = createHash('sha256').update(form.get('code_verifier') || '').digest('base64url');
      if (computed !== grant.challenge) return send(res, 200, { error: 'bad_verification_code' });
    }
    const token = `gho_${randomBytes(18).toString('hex')}`;
    tokens.set(token, grant.user);
    return send(res, 200, { access_token: token, token_type: 'bearer', scope: 'read:org,read:user,user:email' });
  }
  if (req.method === 'GET' && url.pathname.startsWith('/user')) {
    const user = bearer(req);
    if (!user) return send(res, 401, { message: 'Bad credentials' });
    // A user whose organisation withholds the app's access (or who declined scopes): GitHub
    // answers the e-mail, organisation and team lists with 403.
    if (user.withheld && url.pathname !== '/user') return send(res, 403, { message: 'Resource not accessible by integration' });
    switch (url.pathname) {
      case '/user':
        return send(res, 200, { id: user.id, login: user.login, name: user.name, email: user.email });
      case '/user/emails':
        return send(res, 200, user.emails);
      case '/user/orgs':
        return send(res, 200, user.orgs.map((login) => ({ login })));
      case '/user/teams':
        return send(res, 200, user.teams.map((t) => ({ slug: t.slug, organization: { login: t.org } })));
      default:
        break;
    }
  }
  return send(res, 404, { message: 'Not Found' });
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => {
    console.error(`request failed: ${err.message}`);
    if (!res.headersSent) send(res, 400, { message: 'Bad Request' });
  });
});
server.listen(port, '127.0.0.1', () => console.log(`github stand-in listening on http://127.0.0.1:${port}`));
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => server.close(() => process.exit(0)));

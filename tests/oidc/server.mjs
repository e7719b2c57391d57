// The local OpenID provider for tests and `make run`: npm `oidc-provider` (a certified OpenID
// Provider) with the static test users of users.json and one confidential client, the sidecar.
//
//   node tests/oidc/server.mjs            (PORT and the client settings from the environment)
//
// Environment (every variable is optional). `make run` (deploy/tools/run.py) sets PORT to a free
// port, OIDC_CLIENT_ID / OIDC_CLIENT_SECRET to the values it also writes into the sidecar's
// [upstream] (mcpgw / mcpgw-dev-secret) and OIDC_REDIRECT_URIS to <public_url>/oauth/callback;
// the tests set all four the same way for their own sidecar:
//   PORT                 listening port on 127.0.0.1                      (default 9090)
//   ISSUER               the issuer URL                                   (default http://127.0.0.1:$PORT)
//   OIDC_CLIENT_ID       the sidecar's client id                          (default mcpgw)
//   OIDC_CLIENT_SECRET   the sidecar's client secret; empty: a public client (default mcpgw-dev-secret)
//   OIDC_REDIRECT_URIS   comma-separated redirect URIs of that client     (default http://127.0.0.1:8080/oauth/callback)
//   OIDC_USERS           path of the users file                           (default users.json next to this file)
//
// A user is { sub, login, password, name?, email?, groups?, preferred_username?, email_verified? }:
// `login` is what the form takes; `preferred_username` defaults to it (null leaves the claim out)
// and `email_verified` to true. hostile-users.json holds the red-team tests' users, whose claims
// carry what a gateway might read differently (commas, Unicode spaces, control characters).
//
// Supported: discovery (/.well-known/openid-configuration), authorization code with PKCE (S256)
// and nonce, ID tokens signed with an RSA key generated at start (JWKS at /jwks), userinfo with
// `name`, `email`, `preferred_username` and `groups` (scope profile, or groups alone),
// client_secret_basic / client_secret_post at the token endpoint.
//
// Login is a plain HTML form (no JavaScript) that an HTTP client can fill in: the authorization
// endpoint redirects to GET /interaction/<uid>, which shows a form posting `login` and `password`
// to /interaction/<uid>/login. A wrong password shows the form again with status 401. Consent is
// granted without a page: the only client is the gateway itself (first party). Cookies carry the
// interaction, so a client needs a cookie jar.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import Provider from 'oidc-provider';

const here = dirname(fileURLToPath(import.meta.url));
const env = process.env;
const port = Number(env.PORT || 9090);
const issuer = env.ISSUER || `http://127.0.0.1:${port}`;
const users = JSON.parse(readFileSync(env.OIDC_USERS || join(here, 'users.json'), 'utf8'));

const signingKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });

// An empty OIDC_CLIENT_SECRET makes the client public (PKCE only, `none` at the token endpoint).
const secret = env.OIDC_CLIENT_SECRET ?? 'mcpgw-dev-secret';
const client = {
  client_id: env.OIDC_CLIENT_ID || 'mcpgw',
  redirect_uris: (env.OIDC_REDIRECT_URIS || 'http://127.0.0.1:8080/oauth/callback').split(',').map((s) => s.trim()).filter(Boolean),
  grant_types: ['authorization_code'],
  response_types: ['code'],
  ...(secret
    ? { client_secret: secret, token_endpoint_auth_method: 'client_secret_basic' }
    : { token_endpoint_auth_method: 'none' }),
};

function findUser(id) {
  return users.find((u) => u.sub === id || u.login === id);
}

const provider = new Provider(issuer, {
  clients: [client],
  jwks: { keys: [{ ...signingKey, kid: 'oidc-test-rs256', use: 'sig', alg: 'RS256' }] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  scopes: ['openid', 'profile', 'email', 'groups'],
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username', 'groups'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  pkce: { required: () => true },
  features: { devInteractions: { enabled: false }, userinfo: { enabled: true } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, id) {
    const user = findUser(id);
    if (!user) return undefined;
    return {
      accountId: user.sub,
      async claims() {
        return {
          sub: user.sub,
          name: user.name,
          preferred_username: 'preferred_username' in user ? user.preferred_username : user.login,
          email: user.email,
          email_verified: user.email_verified ?? true,
          groups: user.groups || [],
        };
      },
    };
  },
});

const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function loginPage(res, uid, status, message) {
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
    'x-frame-options': 'DENY',
  });
  res.end(`<!doctype html>
<html><head><meta charset="utf-8"><title>Sign in</title></head>
<body>
<h1>Sign in to the test OpenID provider</h1>
${message ? `<p class="error">${escapeHtml(message)}</p>` : ''}
<form method="post" action="/interaction/${escapeHtml(uid)}/login">
<label>Login <input name="login" autocomplete="username" autofocus></label>
<label>Password <input name="password" type="password" autocomplete="current-password"></label>
<button type="submit">Sign in</button>
</form>
</body></html>
`);
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 16 * 1024) throw new Error('form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

// The first-party client gets every scope it asked for without a consent page.
async function grantConsent(req, res, details) {
  const { prompt, params, session, grantId } = details;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
  if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
  if (prompt.details.missingResourceScopes) {
    for (const [indicator, scopes] of Object.entries(prompt.details.missingResourceScopes)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }
  const result = { consent: { grantId: await grant.save() } };
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) {
    loginPage(res, uid, 400, 'this sign-in request has expired, start again');
    return;
  }
  if (details.prompt.name === 'consent') {
    await grantConsent(req, res, details);
    return;
  }
  if (action !== 'login' || req.method !== 'POST') {
    loginPage(res, uid, 200, '');
    return;
  }
  const form = await readForm(req);
  const user = findUser(form.get('login') || '');
  if (!user || user.password !== form.get('password')) {
    loginPage(res, uid, 401, 'unknown login or wrong password');
    return;
  }
  await provider.interactionFinished(req, res, { login: { accountId: user.sub } }, { mergeWithLastSubmission: false });
}

const providerCallback = provider.callback();

const server = http.createServer((req, res) => {
  const path = new URL(req.url, issuer).pathname;
  const match = /^\/interaction\/([^/]+)(?:\/(login))?$/.exec(path);
  if (!match) {
    providerCallback(req, res);
    return;
  }
  interaction(req, res, match[1], match[2]).catch((err) => {
    console.error(`interaction failed: ${err.message}`);
    if (!res.headersSent) loginPage(res, match[1], 400, 'this sign-in request is not valid, start again');
  });
});

server.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer} (client ${client.client_id}, users ${users.map((u) => u.login).join(', ')})`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}

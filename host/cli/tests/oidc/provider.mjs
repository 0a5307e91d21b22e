// An OpenID Connect provider on loopback for the SSO tests (host/cli/tests/it/sso.rs), on npm `oidc-provider`.
//
//   node provider.mjs CONFIG.json
//
// CONFIG: { "port": 0-65535, "issuer": "http://127.0.0.1:PORT", "clients": [{ "client_id", "client_secret",
// "redirect_uris": [...] }], "users": { "<login hint>": { "sub": "...", ...claims } } }. It prints `ready` once
// listening.
//
// Logging in needs no person: the interaction route logs in the user named by the authorization request's
// `login_hint` and grants what the client asked for. Every client is confidential (client_secret_basic) and must use
// PKCE (S256).
//
// The signing keys are made here, so the harness can also mint deliberately WRONG ID tokens. `POST /__mischief?mode=M`
// arms one mischief for the next token response:
//   wrong-issuer, wrong-audience, expired, bad-signature (another key, same kid), alg-none, hs256-public-key (HS256
//   with the public key as the HMAC secret), replay-nonce (the nonce of an earlier login, re-signed properly),
//   strip-verifier (removes code_verifier from the token request before oidc-provider sees it: it refuses).
// `GET /__mischief` says which mode is armed and how many token responses were sent.

import { readFileSync } from 'node:fs';
import http from 'node:http';
import querystring from 'node:querystring';

import Provider from 'oidc-provider';
import { SignJWT, UnsecuredJWT, decodeJwt, decodeProtectedHeader, exportJWK, exportSPKI, generateKeyPair } from 'jose';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));

const signing = await generateKeyPair('RS256', { extractable: true });
const kid = 'test-key-1';
const privateJwk = { ...(await exportJWK(signing.privateKey)), kid, alg: 'RS256', use: 'sig' };
const publicPem = await exportSPKI(signing.publicKey);
const other = await generateKeyPair('RS256', { extractable: true });

const users = config.users || {};

const provider = new Provider(config.issuer, {
  clients: config.clients.map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    redirect_uris: c.redirect_uris,
    response_types: ['code'],
    grant_types: ['authorization_code'],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'RS256',
  })),
  jwks: { keys: [privateJwk] },
  pkce: { required: () => true },
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username', 'groups'],
    email: ['email', 'email_verified'],
  },
  // Put the scope's claims in the ID token itself, as many enterprise providers do, so the relay needs no userinfo.
  conformIdTokenClaims: false,
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: { enabled: true },
  },
  cookies: { keys: ['imfree-test-cookie-key'] },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, id) {
    const user = Object.values(users).find((u) => u.sub === id);
    if (!user) return undefined;
    return { accountId: id, async claims() { return { ...user }; } };
  },
  renderError(ctx, out) {
    ctx.type = 'text/plain';
    ctx.body = `${out.error}: ${out.error_description || ''}`;
  },
});

// --- mischief ------------------------------------------------------------------------------------------------
let mode = null;
let tokens = 0;
const seenNonces = [];

async function resign(payload, header = {}) {
  return new SignJWT(payload).setProtectedHeader({ alg: 'RS256', kid, typ: 'JWT', ...header }).sign(signing.privateKey);
}

async function misbehave(idToken, armed) {
  const claims = decodeJwt(idToken);
  const now = Math.floor(Date.now() / 1000);
  switch (armed) {
    case 'wrong-issuer':
      return resign({ ...claims, iss: 'https://evil.example' });
    case 'wrong-audience':
      return resign({ ...claims, aud: 'someone-else', azp: 'someone-else' });
    case 'expired':
      return resign({ ...claims, iat: now - 10, exp: now - 5 });
    case 'bad-signature':
      return new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid, typ: 'JWT' }).sign(other.privateKey);
    case 'alg-none':
      return new UnsecuredJWT(claims).encode();
    case 'hs256-public-key':
      return new SignJWT(claims).setProtectedHeader({ alg: 'HS256', kid, typ: 'JWT' }).sign(new TextEncoder().encode(publicPem));
    case 'replay-nonce': {
      const earlier = seenNonces.find((n) => n !== claims.nonce);
      if (!earlier) throw new Error('replay-nonce needs an earlier login');
      return resign({ ...claims, nonce: earlier });
    }
    default:
      return idToken;
  }
}

provider.use(async (ctx, next) => {
  const isToken = ctx.method === 'POST' && ctx.path === '/token';
  const armed = isToken ? mode : null;
  if (isToken) mode = null;
  if (armed === 'strip-verifier') {
    const chunks = [];
    for await (const chunk of ctx.req) chunks.push(chunk);
    const params = querystring.parse(Buffer.concat(chunks).toString());
    delete params.code_verifier;
    ctx.req.body = querystring.stringify(params);
  }
  await next();
  if (isToken && ctx.status === 200 && ctx.body && typeof ctx.body.id_token === 'string') {
    tokens += 1;
    const original = ctx.body.id_token;
    if (armed && armed !== 'strip-verifier') {
      ctx.body = { ...ctx.body, id_token: await misbehave(original, armed) };
    }
    const { nonce } = decodeJwt(original);
    if (nonce) seenNonces.push(nonce);
  }
});

// --- interactions: log in the login_hint user and grant what was asked --------------------------------------
async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params } = details;
  if (prompt.name === 'login') {
    const user = users[params.login_hint];
    if (!user) {
      return provider.interactionFinished(req, res, {
        error: 'access_denied',
        error_description: `no test user ${JSON.stringify(params.login_hint)}`,
      });
    }
    return provider.interactionFinished(req, res, { login: { accountId: user.sub } }, { mergeWithLastSubmission: false });
  }
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
  if (params.scope) grant.addOIDCScope(params.scope);
  const missing = prompt.details || {};
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  if (missing.missingResourceScopes) {
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }
  const grantId = await grant.save();
  return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

const callback = provider.callback();
const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, config.issuer);
  try {
    if (url.pathname === '/__mischief') {
      if (req.method === 'POST') mode = url.searchParams.get('mode');
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ mode, tokens, nonces: seenNonces.length }));
      return;
    }
    if (url.pathname.startsWith('/interaction/')) {
      await interaction(req, res);
      return;
    }
    callback(req, res);
  } catch (e) {
    res.writeHead(500, { 'content-type': 'text/plain' });
    res.end(`test provider: ${e.message}`);
  }
});
server.listen(config.port, '127.0.0.1', () => {
  process.stdout.write('ready\n');
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));

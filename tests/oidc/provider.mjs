// A real OpenID provider for lamina's tests: oidc-provider (OpenID Certified), on loopback.
//
//   node tests/oidc/provider.mjs            (LAMINA_TEST_ENC_JWK: lamina's public encryption JWK)
//
// Prints one JSON line {"issuer": ...} once it listens, then serves:
// - discovery at /.well-known/openid-configuration, and the same document at Pro Santé Connect's
//   non-standard /.well-known/wallet-openid-configuration (lamina takes the URL as configuration);
// - tokens by the client_credentials grant, as JWT access tokens for the resource "urn:lamina"
//   (signed, RS256) or "urn:lamina:encrypted" (signed, then encrypted to lamina's key: a nested
//   JWE), with claims shaped like Pro Santé Connect's (SubjectNameID, SubjectRefPro, acr) chosen by
//   client: "pathologist" (acr eidas1) and "technician" (no acr);
// - POST /admin/rotate: a new signing key made current, the old one still published, without
//   restarting this process (the provider object is rebuilt with the longer key list);
// - the viewer's sign-in: the client "lamina-viewer" (confidential: its secret is
//   LAMINA_TEST_VIEWER_SECRET, default "lamina-viewer-secret"), authorization code with PKCE (S256,
//   required) and refresh tokens, redirected to the viewer on a loopback address and any port (a
//   "native" client, RFC 8252 7.3: the test's lamina server listens on a port chosen after this
//   one). The person signs in on oidc-provider's development login form (login: "pathologist" or
//   "technician", any password); the viewer's consent is implied (a first-party client). Its
//   access tokens carry the person's claims, for the resource "urn:lamina", and live
//   LAMINA_TEST_ACCESS_TTL seconds (default 300);
// - clients signing in like the viewer (secret: "<client_id>-secret") whose access tokens carry
//   the person's acr only, as Pro Santé Connect's: SubjectNameID and SubjectRefPro are given by the
//   userinfo endpoint, as JSON ("psc-userinfo-json"), signed RS256 ("psc-userinfo-jws") or signed
//   then encrypted to lamina's key ("psc-userinfo-jwe", with LAMINA_TEST_ENC_JWK). oidc-provider
//   refuses at userinfo an access token with an audience (one for a resource server, as lamina's
//   are): a token for userinfo is one asked without a resource, e.g. by the refresh token.
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import http from 'node:http';

import Provider, { interactionPolicy } from 'oidc-provider';

const WALLET_DISCOVERY = '/.well-known/wallet-openid-configuration';
const ACCESS_TTL = Number(process.env.LAMINA_TEST_ACCESS_TTL || 300);
const VIEWER = {
  client_id: 'lamina-viewer',
  client_secret: process.env.LAMINA_TEST_VIEWER_SECRET || 'lamina-viewer-secret',
  application_type: 'native',
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  redirect_uris: ['http://127.0.0.1/'],
  post_logout_redirect_uris: ['http://127.0.0.1/'],
  token_endpoint_auth_method: 'client_secret_post',
};
const encryptionKey = process.env.LAMINA_TEST_ENC_JWK ? JSON.parse(process.env.LAMINA_TEST_ENC_JWK) : null;
const USERINFO_CLIENTS = [
  { client_id: 'psc-userinfo-json' },
  { client_id: 'psc-userinfo-jws', userinfo_signed_response_alg: 'RS256' },
  ...(encryptionKey ? [{
    client_id: 'psc-userinfo-jwe',
    userinfo_signed_response_alg: 'RS256',
    userinfo_encrypted_response_alg: 'RSA-OAEP-256',
    userinfo_encrypted_response_enc: 'A256GCM',
    jwks: { keys: [encryptionKey] },
  }] : []),
].map((metadata) => ({ ...VIEWER, client_secret: `${metadata.client_id}-secret`, ...metadata }));
const USERINFO_IDS = new Set(USERINFO_CLIENTS.map((client) => client.client_id));
// clients whose consent is implied (first-party)
const FIRST_PARTY = new Set([VIEWER.client_id, ...USERINFO_IDS]);

function signingKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), use: 'sig', alg: 'RS256' };
}

function activity(finess, codeRole) {
  return {
    codeModeExercice: 'S',
    codeSecteurDactivite: 'SA01',
    codeRole,
    numeroFinessSite: finess,
    numeroFinessetablissementJuridique: '',
    raisonSocialeSite: 'CHU TEST',
  };
}

// The people behind the clients, as Pro Santé Connect's userinfo and tokens describe them.
const PEOPLE = {
  pathologist: {
    acr: 'eidas1',
    SubjectNameID: '810000000001',
    SubjectRefPro: {
      codeCivilite: 'M',
      exercices: [{
        codeProfession: '10',
        codeCategorieProfessionnelle: 'C',
        codeTypeSavoirFaire: 'S',
        codeSavoirFaire: 'SM01',
        activities: [activity('750712184', 'FON-05'), activity('690781810', '')],
      }],
    },
  },
  technician: {
    SubjectNameID: '810000000002',
    SubjectRefPro: {
      exercices: [{
        codeProfession: '96',
        codeCategorieProfessionnelle: 'C',
        codeTypeSavoirFaire: '',
        codeSavoirFaire: '',
        activities: [activity('750712184', '')],
      }],
    },
  },
};

const keys = [signingKey()];

function makeProvider(issuer) {
  const resources = {
    'urn:lamina': { jwt: { sign: { alg: 'RS256' } } },
    'urn:lamina:encrypted': {
      jwt: {
        sign: { alg: 'RS256' },
        encrypt: encryptionKey && {
          alg: 'RSA-OAEP-256', enc: 'A256GCM', kid: encryptionKey.kid, key: encryptionKey,
        },
      },
    },
  };
  const provider = new Provider(issuer, {
    clients: [
      ...Object.keys(PEOPLE).map((name) => ({
        client_id: name,
        client_secret: `${name}-secret`,
        grant_types: ['client_credentials'],
        redirect_uris: [],
        response_types: [],
      })),
      VIEWER,
      ...USERINFO_CLIENTS,
    ],
    // the people who sign in at the login form (accountId: the login typed); their userinfo (the
    // ID token keeps the sub only)
    findAccount: (ctx, id) => (Object.hasOwn(PEOPLE, id) ? {
      accountId: id,
      claims: (use) => (use === 'userinfo' ? {
        sub: id, SubjectNameID: PEOPLE[id].SubjectNameID, SubjectRefPro: PEOPLE[id].SubjectRefPro,
      } : { sub: id }),
    } : undefined),
    claims: {
      acr: null, auth_time: null, iss: null, sid: null, openid: ['sub', 'SubjectNameID', 'SubjectRefPro'],
    },
    loadExistingGrant,
    issueRefreshToken: (ctx, client) => client.grantTypeAllowed('refresh_token'),
    pkce: { required: () => true },
    interactions: { policy: loginOnly() },
    // newest first: oidc-provider signs with the first key that fits
    jwks: { keys: [...keys].reverse() },
    features: {
      devInteractions: { enabled: true },
      encryption: { enabled: true },
      jwtUserinfo: { enabled: true },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => 'urn:lamina',
        getResourceServerInfo: (ctx, resource) => {
          if (!(resource in resources)) throw new Error(`unknown resource ${resource}`);
          return {
            scope: 'slides:read',
            audience: 'lamina',
            accessTokenFormat: 'jwt',
            accessTokenTTL: ACCESS_TTL,
            jwt: resources[resource].jwt,
          };
        },
      },
    },
    // the person's claims: the signed-in account's (viewer), or the client's (client_credentials)
    // (the userinfo clients': the acr only, the rest is at userinfo)
    extraTokenClaims: (ctx, token) => {
      const person = PEOPLE[token.accountId] ?? PEOPLE[token.clientId] ?? {};
      if (!USERINFO_IDS.has(token.clientId)) return person;
      return person.acr ? { acr: person.acr } : {};
    },
  });
  return provider.callback();
}

// The viewer's consent is implied: a grant of its scopes and of the resource, once signed in.
async function loadExistingGrant(ctx) {
  const { client, session, params } = ctx.oidc;
  const grantId = ctx.oidc.result?.consent?.grantId || session.grantIdFor(client.clientId);
  if (grantId) return ctx.oidc.provider.Grant.find(grantId);
  if (!FIRST_PARTY.has(client.clientId) || !session.accountId) return undefined;
  const grant = new ctx.oidc.provider.Grant({ clientId: client.clientId, accountId: session.accountId });
  grant.addOIDCScope(String(params.scope || 'openid'));
  grant.addResourceScope('urn:lamina', 'slides:read');
  await grant.save();
  return grant;
}

// The login prompt only: no consent asked of the viewer's person, though the client is "native"
// (a loopback redirect on any port, for the tests; oidc-provider asks native clients' consent).
function loginOnly() {
  const policy = interactionPolicy.base();
  policy.get('consent').checks.remove('native_client_prompt');
  return policy;
}

let handler = null;
const server = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/admin/rotate') {
    keys.push(signingKey());
    handler = makeProvider(issuerUrl);
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ kid: keys.at(-1).kid }));
    return;
  }
  if (req.url === WALLET_DISCOVERY) req.url = '/.well-known/openid-configuration';
  handler(req, res);
});

let issuerUrl = '';
server.listen(0, '127.0.0.1', () => {
  issuerUrl = `http://127.0.0.1:${server.address().port}`;
  handler = makeProvider(issuerUrl);
  process.stdout.write(`${JSON.stringify({ issuer: issuerUrl })}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}

// A real, OpenID Certified authorization server (panva/node-oidc-provider) for tests/it/oidc.rs.
//
// It exists so the generic `oauth2` provider is proven against a standards-compliant token
// endpoint, not only against our own fakes. Test-only: in-memory storage, development signing
// keys, plain HTTP on 127.0.0.1. Prints `LISTENING <port>` on stdout once it accepts requests.
//
// Usage: node server.js            (ephemeral port)
//        OIDC_PORT=4000 node server.js

import { createServer } from 'node:http';

import Provider, { errors } from 'oidc-provider';

// The resource server a token can be minted for with `resource=` (RFC 8707).
const RESOURCE = 'https://api.tokenbroker.test';

// Public halves of tests/oidc/{rs256,es256}-test-key.pem, TEST-ONLY keys committed for the
// `private_key_jwt` clients (RFC 7523): the provider verifies assertions the proxy signs.
const RS256_JWK = {
  kty: 'RSA',
  e: 'AQAB',
  n: 'nO4rFD7NOKIF0_bToyKdjLozGmtcsVF0Q1hV3My1nLAUGXgMVgNXKcK7FhC9G_6lvrH_w9YuMsy_xsyw7o4nCDR-tgfkB2Zp-h_yeWiCRTqT0Myt1AH8iU6U11EmnTx77JCpUdsryxMsdI-baFpXGg8VXDOuTXBRp_GKjVSwUoEX7myDNFmSt_jy4MEbaJ5AP5vvrIn7iwN-sTsL_NAD_5uYNwECKTYKj-daHonu08-uOo-Usiw_HlmyNTPBXvVvRhZPW_IWdjhgCwpIY8JT5fiMqFLEZtTmvExWYY7JdGQ8Epn2oP8Lw1Uwi1yQ2KL--3j0Qn0j8HViJWg2qRDAkQ',
};
const ES256_JWK = {
  kty: 'EC',
  crv: 'P-256',
  x: 'fPw5HROZmpC14lQceozSyZd5G964x3pTEQauroiAzTQ',
  y: 'OYlZGDiWogBLpHzkE_NJUzlhW0L5tktejl-vwXnzxC0',
};

// Machine clients only: no redirect URIs, no authorization endpoint use.
const machine = (client) => ({
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  scope: 'api:read api:write',
  ...client,
});

const clients = [
  // The secrets carry characters that RFC 6749 2.3.1 form-encodes inside Basic credentials.
  machine({ client_id: 'basic-client', client_secret: 'b4sic s3cret:+/%&=', token_endpoint_auth_method: 'client_secret_basic' }),
  machine({ client_id: 'post-client', client_secret: 'p0st s3cret:+/%&=', token_endpoint_auth_method: 'client_secret_post' }),
  machine({ client_id: 'rs256-client', token_endpoint_auth_method: 'private_key_jwt', token_endpoint_auth_signing_alg: 'RS256', jwks: { keys: [RS256_JWK] } }),
  machine({ client_id: 'es256-client', token_endpoint_auth_method: 'private_key_jwt', token_endpoint_auth_signing_alg: 'ES256', jwks: { keys: [ES256_JWK] } }),
  // Plays the resource server: the test introspects every issued token with it (RFC 7662).
  machine({ client_id: 'introspector', client_secret: 'introspector-secret', token_endpoint_auth_method: 'client_secret_post' }),
];

const server = createServer();
server.listen(Number(process.env.OIDC_PORT ?? 0), '127.0.0.1', () => {
  const { port } = server.address();
  // The issuer must be known before the provider exists, hence listen first, then attach.
  const provider = new Provider(`http://127.0.0.1:${port}`, {
    clients,
    // Scopes the provider knows: without `resource`, unknown scopes would be dropped silently.
    scopes: ['openid', 'offline_access', 'api:read', 'api:write'],
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // Only the one test resource exists; anything else is `invalid_target`.
        getResourceServerInfo(ctx, resourceIndicator) {
          if (resourceIndicator !== RESOURCE) throw new errors.InvalidTarget();
          // Opaque, so the introspection endpoint can vouch for it (it refuses JWT access tokens).
          return { scope: 'api:read', audience: RESOURCE, accessTokenFormat: 'opaque', accessTokenTTL: 600 };
        },
      },
    },
    // Short-lived enough to be realistic; the proxy schedules renewal from `expires_in`.
    ttl: { ClientCredentials: 600 },
  });
  server.on('request', provider.callback());
  process.stdout.write(`LISTENING ${port}\n`);
});

// The test harness kills us; also exit when its pipe closes so no orphan survives a crash.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();

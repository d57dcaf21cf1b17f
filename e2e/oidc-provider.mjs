// A real, certified OpenID Provider (panva's `oidc-provider`) for the
// sign-in tests: its own login and consent pages (the development
// interactions), any user name with any password, one confidential client
// for confab. Start: `startProvider({port, redirectUri})`.

import Provider from 'oidc-provider';

export async function startProvider({ port, redirectUri, clientId = 'confab', clientSecret = 'confab-test-secret' }) {
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    pkce: { required: () => true },
    claims: { openid: ['sub'], profile: ['preferred_username', 'name'] },
    // The ID token carries the profile claims, so confab can name the
    // account without a userinfo request.
    conformIdTokenClaims: false,
    findAccount: async (_ctx, sub) => ({
      accountId: sub,
      claims: async () => ({ sub, preferred_username: sub, name: sub }),
    }),
    features: { devInteractions: { enabled: true } },
  });
  // Development interactions warn on every start; the tests know.
  provider.on('server_error', (_ctx, e) => console.error('oidc-provider:', e));
  const server = await new Promise((resolve) => {
    const s = provider.listen(port, '127.0.0.1', () => resolve(s));
  });
  return { issuer, clientId, clientSecret, close: () => new Promise((r) => server.close(r)) };
}

// Run alone: node oidc-provider.mjs PORT REDIRECT_URI
if (import.meta.url === `file://${process.argv[1]}`) {
  const [port, redirectUri] = process.argv.slice(2);
  const p = await startProvider({ port: Number(port), redirectUri });
  console.log(`oidc-provider listening at ${p.issuer}`);
}

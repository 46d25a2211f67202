// The classic NixOS test, in TypeScript against a Debian guest that vmkit builds (no Nix):
// a server runs nginx from Debian's packages, a client fetches its page by name.
// Run it with: vmkit run examples/nginx.ts (the first run builds the "web" image, about a minute).
import { defineTest } from 'vmkit';

export default defineTest({
  name: 'nginx: a Debian web server and a client',
  machines: {
    server: {
      image: {
        base: 'debian',
        name: 'web',
        packages: ['nginx'],
        files: { '/var/www/html/index.html': 'hello from nginx\n' },
        run: ['systemctl enable nginx'],
      },
    },
    client: {},
  },
  async test({ server, client, subtest, log }) {
    await subtest('nginx comes up', async () => {
      await server.waitForUnit('nginx.service');
      await server.waitForOpenPort(80);
    });

    await subtest('the client fetches the page by name', async () => {
      const page = await client.succeed('wget -q -O - http://server/');
      log(`client got: ${page.trim()}`);
      if (page !== 'hello from nginx\n') throw new Error(`unexpected page: ${JSON.stringify(page)}`);
    });

    await subtest("nginx's access log saw the client", async () => {
      const access = await server.succeed('cat /var/log/nginx/access.log');
      if (!access.includes('GET / HTTP/1.1')) throw new Error(`no request in the access log:\n${access}`);
    });
  },
});

// Two machines on one virtual LAN: the server publishes a page with busybox httpd,
// the client fetches it by host name. Run it with: vmkit run examples/two-machines.ts
import { defineTest } from 'vmkit';

export default defineTest({
  name: 'two machines: a web server and a client',
  machines: { server: {}, client: {} },
  async test({ server, client, subtest, log }) {
    await subtest('server publishes a page over HTTP', async () => {
      await server.succeed('mkdir -p /srv/www && echo "hello from $(hostname)" > /srv/www/index.html');
      await server.succeed('httpd -p 80 -h /srv/www');
      await server.waitForOpenPort(80);
    });

    await subtest('client fetches it across the LAN', async () => {
      const page = await client.succeed('wget -q -O - http://server/index.html');
      log(`client got: ${page.trim()}`);
      if (page.trim() !== 'hello from server') throw new Error(`unexpected page: ${JSON.stringify(page)}`);
    });

    await subtest('the server logged nothing alarming and stops cleanly', async () => {
      await client.fail('wget -q -O - http://server/missing.html');
      await server.shutdown();
    });
  },
});

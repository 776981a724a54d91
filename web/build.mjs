// Bundles the front end into dist/: one JS file, one CSS file, index.html.
// No inline scripts or styles: the server's CSP forbids them.
import { build } from 'esbuild';
import { mkdir, readFile, writeFile, copyFile, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(fileURLToPath(import.meta.url));
const dist = join(root, 'dist');
const assets = join(dist, 'assets');

await rm(dist, { recursive: true, force: true });
await mkdir(assets, { recursive: true });

await build({
  entryPoints: [join(root, 'src/main.ts')],
  bundle: true,
  minify: true,
  format: 'esm',
  target: 'es2020',
  outfile: join(assets, 'app.js'),
  legalComments: 'none',
  logLevel: 'warning',
});

const css = await Promise.all([
  readFile(join(root, 'node_modules/uplot/dist/uPlot.min.css'), 'utf8'),
  readFile(join(root, 'src/style.css'), 'utf8'),
]);
// uPlot's base styles first so ours can override them.
await writeFile(join(assets, 'app.css'), css.join('\n'));
await copyFile(join(root, 'index.html'), join(dist, 'index.html'));
console.log('built dist/');

// Loaded with `node --import ./dist/single-nest.js` by every bench app.
//
// The library is imported from the repository's build (../dist/lib), whose bare imports would
// otherwise resolve from the repository's own node_modules while the bench app and the competitors
// resolve from bench/node_modules: two copies of @nestjs/core in one process, and Nest's DI (which
// keys providers by class) breaks. An app that installs the library from npm has one copy of its
// peers; this hook gives the bench apps the same: bare imports of the shared packages made from
// ../dist/lib resolve from bench/node_modules. Nothing else is redirected.
import { register } from 'node:module';

register('./single-nest-hooks.js', import.meta.url);

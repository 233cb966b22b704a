'use strict';
// An Express app behind express-idempotency (npm, Ville de Montréal, MIT),
// for the interop tests in ../express_test.go. The idempotency middleware is
// used as its README says: mounted before the route, the route handler
// returning at once when isHit(req) says the middleware already answered.
//
// POST /users creates a user, unless the JSON body steers it:
//   until_arrivals: n  hold the handler until n requests with this key have
//                      arrived (at most max_hold_ms, default 10000)
//   delay_ms: n        then sleep n ms
//   status, body, content_type
//                      answer that status and body (text/plain by default)
//                      instead of creating a user, e.g. a business 409
//                      "e-mail already registered"
// The JSON body must be the same on every retry: express-idempotency compares
// it with the original's.
//
// GET /stats?key=K tells what the server saw for one key (arrivals, handler
// runs, handler runs in flight, the status of every answer it finished) and
// how many users exist. It is outside the idempotency middleware.
//
// Environment:
//   PORT               default 0 (any free port); the port is printed on
//                      stdout as one JSON line {"listening":port}
//   IDEMPOTENCY_STORE  "2xx" (default): the package's own response validator,
//                      which stores 2xx answers only and forgets the key
//                      otherwise; "all": a validator that stores every answer
//                      of the handler (the draft's "success or an error")
//   NODE_ENV           as for any Express app: "production" renders errors
//                      without the stack trace

const express = require('express');
const { idempotency, getSharedIdempotencyService } = require('express-idempotency');

const KEY_HEADER = 'idempotency-key'; // the package's default

const options = {};
const store = process.env.IDEMPOTENCY_STORE || '2xx';
if (store === 'all') {
  options.responseValidator = { isValidForPersistence: () => true };
} else if (store !== '2xx') {
  console.error(`IDEMPOTENCY_STORE=${store}: want 2xx or all`);
  process.exit(2);
}

const stats = new Map(); // key ('' for none) -> {arrivals, runs, in_flight, answers}
function statsFor(key) {
  let s = stats.get(key);
  if (!s) {
    s = { arrivals: 0, runs: 0, in_flight: 0, answers: [] };
    stats.set(key, s);
  }
  return s;
}
let users = 0;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function holdUntil(cond, maxMs) {
  const deadline = Date.now() + maxMs;
  while (!cond() && Date.now() < deadline) {
    await sleep(2);
  }
}

const app = express();

// Counts every POST before the idempotency middleware sees it, and the status
// of every answer the server finished writing (replays and the middleware's
// own errors included).
app.use((req, res, next) => {
  if (req.method === 'POST') {
    const s = statsFor(req.get(KEY_HEADER) || '');
    s.arrivals++;
    res.on('finish', () => s.answers.push(res.statusCode));
  }
  next();
});

app.get('/stats', (req, res) => {
  const key = typeof req.query.key === 'string' ? req.query.key : '';
  res.json({ ...statsFor(key), users });
});

app.post('/users', express.json(), idempotency(options), async (req, res) => {
  if (getSharedIdempotencyService().isHit(req)) {
    return; // the middleware answered: a replay, a 409 or a 417
  }
  const key = req.get(KEY_HEADER) || '';
  const s = statsFor(key);
  s.runs++;
  s.in_flight++;
  try {
    const b = req.body || {};
    if (b.until_arrivals) {
      await holdUntil(() => s.arrivals >= b.until_arrivals, b.max_hold_ms || 10000);
    }
    if (b.delay_ms) {
      await sleep(b.delay_ms);
    }
    res.set('X-Handler-Run', String(s.runs));
    if (b.status) {
      res.status(b.status).type(b.content_type || 'text/plain').send(b.body || '');
      return;
    }
    users++;
    const id = `usr_${users}`;
    res.status(201).location(`/users/${id}`).json({ id, email: b.email, key });
  } finally {
    s.in_flight--;
  }
});

const server = app.listen(Number(process.env.PORT || 0), '127.0.0.1', () => {
  console.log(JSON.stringify({ listening: server.address().port }));
});

process.on('SIGTERM', () => server.close(() => process.exit(0)));

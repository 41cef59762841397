// A test OTLP collector: receives OTLP/HTTP (protobuf, optionally gzip) and OTLP/gRPC, decodes
// every request with the official OpenTelemetry JS protobuf code (@opentelemetry/otlp-transformer's
// generated root, built from opentelemetry-proto), and appends one JSON line per request to
// --out: {"signal", "protocol", "encoding", "request"} with ids as lowercase hex and 64-bit
// integers as decimal strings. pitlane's own code decodes nothing here.
//
//   node receiver.js --out FILE [--fail-first N] [--fail-status 503] [--retry-after SECONDS]
//                    [--retry-after-date SECONDS]
//                    [--fail-grpc-code UNAVAILABLE] [--partial-reject N [--partial-message TEXT]]
//                    [--tls-cert PEM --tls-key PEM]
//
// Prints "ready HTTP_PORT GRPC_PORT" once both listen (ports chosen by the system), then nothing
// (nobody reads its stdout after that). The first N requests (across protocols) are answered
// with --fail-status (HTTP) / --fail-grpc-code (gRPC) and are not recorded; --retry-after
// adds a Retry-After header (HTTP) or a google.rpc.RetryInfo in the status details (gRPC's
// grpc-status-details-bin trailer, encoded from googleapis' own .proto files). --partial-reject: every
// accepted request is answered with a partial success rejecting N of its items (at most as many
// as it carried) with --partial-message; the request is recorded whole. --tls-cert/--tls-key:
// both ports speak TLS only (https, and gRPC over TLS) with that certificate.
'use strict';

const fs = require('fs');
const http = require('http');
const https = require('https');
const zlib = require('zlib');
const grpc = require('@grpc/grpc-js');
const root = require('@opentelemetry/otlp-transformer/build/src/generated/root');

const args = process.argv.slice(2);
function arg(name, fallback) {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
}
const out = arg('--out');
let failFirst = Number(arg('--fail-first', '0'));
const failStatus = Number(arg('--fail-status', '503'));
const retryAfter = arg('--retry-after');
// --retry-after-date SECONDS: the HTTP Retry-After as an HTTP-date that many seconds ahead.
const retryAfterDate = arg('--retry-after-date');
const failGrpcCode = arg('--fail-grpc-code', 'UNAVAILABLE');
const partialReject = Number(arg('--partial-reject', '0'));
const partialMessage = arg('--partial-message', '');
const tls = arg('--tls-cert')
  ? { cert: fs.readFileSync(arg('--tls-cert')), key: fs.readFileSync(arg('--tls-key')) }
  : null;
if (!out) {
  console.error('usage: receiver.js --out FILE [--fail-first N]');
  process.exit(2);
}

const collector = root.opentelemetry.proto.collector;
const types = {
  traces: [collector.trace.v1.ExportTraceServiceRequest, collector.trace.v1.ExportTraceServiceResponse],
  metrics: [collector.metrics.v1.ExportMetricsServiceRequest, collector.metrics.v1.ExportMetricsServiceResponse],
  logs: [collector.logs.v1.ExportLogsServiceRequest, collector.logs.v1.ExportLogsServiceResponse],
};

function hexify(v) {
  if (v instanceof Uint8Array) return Buffer.from(v).toString('hex');
  if (Array.isArray(v)) return v.map(hexify);
  if (v && typeof v === 'object') {
    const o = {};
    for (const [k, x] of Object.entries(v)) o[k] = hexify(x);
    return o;
  }
  return v;
}

// The answer to an accepted request: empty, or a partial success rejecting up to
// --partial-reject of the request's items (the field names are the specification's).
function answer(signal, message) {
  const [, Resp] = types[signal];
  if (partialReject === 0) return Resp.create({});
  let items = 0;
  if (signal === 'traces') {
    for (const rs of message.resourceSpans) for (const ss of rs.scopeSpans) items += ss.spans.length;
  } else if (signal === 'logs') {
    for (const rl of message.resourceLogs) for (const sl of rl.scopeLogs) items += sl.logRecords.length;
  } else {
    for (const rm of message.resourceMetrics) {
      for (const sm of rm.scopeMetrics) {
        for (const m of sm.metrics) {
          const data = m.sum || m.gauge || m.histogram || m.exponentialHistogram || m.summary;
          items += data ? data.dataPoints.length : 0;
        }
      }
    }
  }
  const field = { traces: 'rejectedSpans', metrics: 'rejectedDataPoints', logs: 'rejectedLogRecords' }[signal];
  return Resp.create({ partialSuccess: { [field]: Math.min(partialReject, items), errorMessage: partialMessage } });
}

let received = 0;
function record(signal, protocol, encoding, message) {
  const [Req] = types[signal];
  const obj = Req.toObject(message, { longs: String, enums: String, defaults: false });
  fs.appendFileSync(out, JSON.stringify({ signal, protocol, encoding, request: hexify(obj) }) + '\n');
  received += 1;
}

function shouldFail() {
  if (failFirst > 0) {
    failFirst -= 1;
    return true;
  }
  return false;
}

function handle(req, res) {
  const signal = { '/v1/traces': 'traces', '/v1/metrics': 'metrics', '/v1/logs': 'logs' }[req.url];
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    if (req.method !== 'POST' || !signal) {
      res.writeHead(404).end();
      return;
    }
    if (req.headers['content-type'] !== 'application/x-protobuf') {
      res.writeHead(415).end();
      return;
    }
    if (shouldFail()) {
      const headers = retryAfter !== undefined ? { 'Retry-After': retryAfter }
          : retryAfterDate !== undefined
          ? { 'Retry-After': new Date(Date.now() + Number(retryAfterDate) * 1000).toUTCString() }
          : {};
      res.writeHead(failStatus, headers).end();
      return;
    }
    let body = Buffer.concat(chunks);
    const encoding = req.headers['content-encoding'] || 'identity';
    try {
      if (encoding === 'gzip') body = zlib.gunzipSync(body);
      const [Req, Resp] = types[signal];
      const message = Req.decode(body);
      record(signal, 'http/protobuf', encoding, message);
      if (req.headers['x-test-header'] !== undefined) {
        fs.appendFileSync(out, JSON.stringify({ header: req.headers['x-test-header'] }) + '\n');
      }
      const reply = Buffer.from(Resp.encode(answer(signal, message)).finish());
      res.writeHead(200, { 'Content-Type': 'application/x-protobuf' }).end(reply);
    } catch (e) {
      console.error(`decode failed: ${e}`);
      res.writeHead(400).end(String(e));
    }
  });
}
const server = tls ? https.createServer(tls, handle) : http.createServer(handle);

// grpc-js decompresses a message before the handler sees it and strips grpc-encoding from the
// metadata; to report whether a message came compressed, note the encoding grpc-js decompresses
// each message with ('identity' for an uncompressed one). The exporter sends one request at a
// time, so the last one noted belongs to the call being handled.
const interceptors = require('@grpc/grpc-js/build/src/server-interceptors');
let lastGrpcEncoding = 'identity';
const decompress = interceptors.BaseServerInterceptingCall.prototype.decompressMessage;
interceptors.BaseServerInterceptingCall.prototype.decompressMessage = function (message, encoding) {
  lastGrpcEncoding = encoding;
  return decompress.call(this, message, encoding);
};

// google.rpc.Status and RetryInfo from googleapis' files (the google-proto-files package);
// protobufjs brings the well-known types they import.
const path = require('path');
const protobuf = require('protobufjs');
const googleapis = path.dirname(require.resolve('google-proto-files/package.json'));
const rpc = new protobuf.Root();
rpc.resolvePath = (origin, target) =>
  target.startsWith('google/protobuf/') ? target : path.join(googleapis, target);
rpc.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto']);
const RpcStatus = rpc.lookupType('google.rpc.Status');
const RetryInfo = rpc.lookupType('google.rpc.RetryInfo');

// The error a failing gRPC call gets: --fail-grpc-code, with a RetryInfo when --retry-after.
function grpcFailure() {
  const code = grpc.status[failGrpcCode];
  const details = 'test collector says no';
  const failure = { code, details };
  if (retryAfter !== undefined) {
    const info = RetryInfo.encode({ retryDelay: { seconds: Number(retryAfter), nanos: 0 } }).finish();
    const status = RpcStatus.encode({
      code,
      message: details,
      details: [{ type_url: 'type.googleapis.com/google.rpc.RetryInfo', value: info }],
    }).finish();
    failure.metadata = new grpc.Metadata();
    failure.metadata.set('grpc-status-details-bin', Buffer.from(status));
  }
  return failure;
}

const grpcServer = new grpc.Server();
for (const [signal, [Req, Resp]] of Object.entries(types)) {
  const service = { traces: 'trace', metrics: 'metrics', logs: 'logs' }[signal];
  const name = { traces: 'TraceService', metrics: 'MetricsService', logs: 'LogsService' }[signal];
  grpcServer.addService(
    {
      Export: {
        path: `/opentelemetry.proto.collector.${service}.v1.${name}/Export`,
        requestStream: false,
        responseStream: false,
        requestSerialize: (m) => Buffer.from(Req.encode(m).finish()),
        requestDeserialize: (b) => Req.decode(b),
        responseSerialize: (m) => Buffer.from(Resp.encode(m).finish()),
        responseDeserialize: (b) => Resp.decode(b),
      },
    },
    {
      Export: (call, callback) => {
        if (shouldFail()) {
          callback(grpcFailure());
          return;
        }
        record(signal, 'grpc', lastGrpcEncoding, call.request);
        const h = call.metadata.get('x-test-header');
        if (h.length) fs.appendFileSync(out, JSON.stringify({ header: String(h[0]) }) + '\n');
        callback(null, answer(signal, call.request));
      },
    },
  );
}

server.listen(0, '127.0.0.1', () => {
  const httpPort = server.address().port;
  const credentials = tls
    ? grpc.ServerCredentials.createSsl(null, [{ cert_chain: tls.cert, private_key: tls.key }])
    : grpc.ServerCredentials.createInsecure();
  grpcServer.bindAsync('127.0.0.1:0', credentials, (err, grpcPort) => {
    if (err) {
      console.error(String(err));
      process.exit(1);
    }
    console.log(`ready ${httpPort} ${grpcPort}`);
  });
});

// The parent closes our stdin when it is done (or dies): exit then.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();

#!/usr/bin/env node
// Independent OCPP 1.6J test CSMS for evsed conformance tests.
//
// Built on the npm package ocpp-rpc (not on the Python `ocpp` library evsed uses) in strict
// mode: every inbound CALL and CALLRESULT and every outbound CALL and CALLRESULT is validated
// against ocpp-rpc's bundled OCPP 1.6 JSON schemas. Anything that fails is recorded as a
// violation. On top of that the script checks OCPP-J rules the schemas cannot express: the
// charge point must never have more than one CALL outstanding (OCPP-J 1.6 section 4.1.1), and a
// CALLERROR must use an OCPP 1.6 error code with an object as errorDetails (section 4.2.3).
//
// OCPP 2.0.1: with CSMS_PROTOCOLS=ocpp2.0.1 (a comma-separated list, in order of preference;
// default ocpp1.6) a station that picks ocpp2.0.1 is checked against ocpp-rpc's 2.0.1 schemas,
// with BootNotification, Heartbeat, StatusNotification, Authorize and TransactionEvent answered
// and the 2.0.1 error codes (part 4 4.3) required in its CALLERRORs.
//
// Usage: node csms.js [port]   (or CSMS_PORT=...; 0 or nothing = pick a free port)
// Listens on 127.0.0.1, URL ws://127.0.0.1:<port>/<anything>/<chargePointId>.
//
// stdout: newline-delimited JSON. The first line is {"event":"listening","port":N,...}.
// stdin: newline-delimited JSON commands; the reply carries the command's "id" (if given):
//   {"cmd":"call","method":"RemoteStartTransaction","params":{...}[,"identity":"CP-1"][,"timeoutMs":N]}
//       -> {"event":"result","result":{...}} or {"event":"result","error":{code,message,details}}
//   {"cmd":"stats"}        -> {"event":"stats", received, violations, maxOutstanding, ...}
//   {"cmd":"disconnect"[,"identity":..][,"force":true]} -> close the station's WebSocket
//   {"cmd":"offline","on":true|false} -> refuse (HTTP 503) / accept new WebSocket connections
//   {"cmd":"clients"}      -> {"event":"clients","identities":[...]}
//   {"cmd":"quit"}         -> close everything and exit
// EOF on stdin also shuts the server down, so the CSMS never outlives its test.
'use strict';

const readline = require('node:readline');
const { RPCServer, createRPCError } = require('ocpp-rpc');
const OCPP_RPC_VERSION = require('ocpp-rpc/package.json').version;

const HOST = '127.0.0.1';
const PORT = Number(process.argv[2] ?? process.env.CSMS_PORT ?? 0);
const HEARTBEAT_INTERVAL_S = Number(process.env.CSMS_HEARTBEAT_INTERVAL ?? 3600);

// OCPP-J 1.6 section 4.2.3 (and errata: "FormationViolation" is the 1.6 spelling).
const OCPP16_ERROR_CODES = new Set([
    'NotImplemented', 'NotSupported', 'InternalError', 'ProtocolError', 'SecurityError',
    'FormationViolation', 'PropertyConstraintViolation', 'OccurenceConstraintViolation',
    'TypeConstraintViolation', 'GenericError',
]);

// OCPP-J 2.0.1 part 4, 4.3 Table 8.
const OCPP201_ERROR_CODES = new Set([
    'FormatViolation', 'GenericError', 'InternalError', 'MessageTypeNotSupported',
    'NotImplemented', 'NotSupported', 'OccurrenceConstraintViolation',
    'PropertyConstraintViolation', 'ProtocolError', 'RpcFrameworkError', 'SecurityError',
    'TypeConstraintViolation',
]);
const PROTOCOLS = (process.env.CSMS_PROTOCOLS ?? 'ocpp1.6').split(',').map((p) => p.trim());

function emit(obj) {
    process.stdout.write(JSON.stringify(obj) + '\n');
}

function errorInfo(err) {
    if (!err) return null;
    return {
        code: err.rpcErrorCode ?? err.code ?? err.name ?? 'Error',
        message: err.rpcErrorMessage || err.message || String(err),
        details: err.details ?? null,
    };
}

// ---------------------------------------------------------------------------- statistics

const stats = {
    connections: 0,
    disconnections: 0,
    rejectedConnections: 0,
    received: {},            // inbound CALLs per action (charge point -> CSMS)
    sent: {},                // outbound CALLs per action (CSMS -> charge point)
    answered: {},            // outbound CALLs answered with a CALLRESULT, per action
    callErrorsReceived: {},  // outbound CALLs answered with a CALLERROR, per action
    violations: [],          // schema / framing / protocol violations (see record())
    maxOutstanding: 0,       // max CALLs from the charge point in flight at once
    overlappingCalls: 0,     // CALLs that arrived while a previous one was unanswered
    transactions: {},        // transactionId -> {start, stops, meterValues, stop}
    stopsForUnknownTx: [],   // StopTransaction for a transactionId never handed out
    duplicateStarts: 0,      // StartTransaction repeating an earlier one (same content)
};
let nextTransactionId = 1;
const startKeys = new Map();  // identical StartTransaction payload -> transactionId
let offline = false;
let answerDelayMs = 0;  // test hook: hold answers so back-to-back CALLs overlap deterministically

function count(bucket, key) {
    bucket[key] = (bucket[key] ?? 0) + 1;
}

function record(kind, identity, fields) {
    const v = { kind, identity, ...fields };
    stats.violations.push(v);
    emit({ event: 'violation', ...v });
}

// ---------------------------------------------------------------------------- handlers

function now() {
    return new Date().toISOString();
}

function registerHandlers201(client) {
    client.handle('BootNotification', () => ({
        status: 'Accepted',
        currentTime: now(),
        interval: HEARTBEAT_INTERVAL_S,
    }));
    client.handle('Heartbeat', () => ({ currentTime: now() }));
    client.handle('StatusNotification', () => ({}));
    client.handle('Authorize', () => ({ idTokenInfo: { status: 'Accepted' } }));
    client.handle('TransactionEvent', ({ params }) =>
        params.idToken ? { idTokenInfo: { status: 'Accepted' } } : {});
    client.handle(({ method }) => {
        throw createRPCError('NotImplemented', `test CSMS does not handle ${method}`);
    });
}

function registerHandlers(client) {
    client.handle('BootNotification', () => ({
        status: 'Accepted',
        currentTime: now(),
        interval: HEARTBEAT_INTERVAL_S,
    }));
    client.handle('Heartbeat', async () => {
        if (answerDelayMs > 0) await new Promise((resolve) => setTimeout(resolve, answerDelayMs));
        return { currentTime: now() };
    });
    client.handle('StatusNotification', () => ({}));
    client.handle('Authorize', () => ({ idTagInfo: { status: 'Accepted' } }));
    client.handle('StartTransaction', ({ params }) => {
        const key = JSON.stringify([client.identity, params]);
        let transactionId = startKeys.get(key);
        if (transactionId !== undefined) {
            // A resend of a StartTransaction we already answered (e.g. after a lost
            // response): same id back, but it is a second StartTransaction for one session.
            stats.duplicateStarts += 1;
            stats.transactions[transactionId].starts += 1;
        } else {
            transactionId = nextTransactionId++;
            startKeys.set(key, transactionId);
            stats.transactions[transactionId] = {
                identity: client.identity,
                starts: 1,
                start: params,
                stops: 0,
                stop: null,
                meterValues: 0,
            };
        }
        return { transactionId, idTagInfo: { status: 'Accepted' } };
    });
    client.handle('MeterValues', ({ params }) => {
        const tx = stats.transactions[params.transactionId];
        if (tx) tx.meterValues += 1;
        return {};
    });
    client.handle('StopTransaction', ({ params }) => {
        const tx = stats.transactions[params.transactionId];
        if (tx) {
            tx.stops += 1;
            tx.stop = params;
        } else {
            stats.stopsForUnknownTx.push(params);
        }
        return params.idTag ? { idTagInfo: { status: 'Accepted' } } : {};
    });
    client.handle('DataTransfer', ({ params }) => ({
        status: 'Accepted',
        data: JSON.stringify({ echo: params.data ?? null }),
    }));
    client.handle('DiagnosticsStatusNotification', () => ({}));
    client.handle('FirmwareStatusNotification', () => ({}));
    // The 1.6 security whitepaper's charger-initiated messages (its schemas are part of
    // ocpp-rpc's ocpp1.6 set, so strict mode checks them too).
    client.handle('SecurityEventNotification', () => ({}));
    client.handle('SignCertificate', () => ({ status: 'Accepted' }));
    client.handle('LogStatusNotification', () => ({}));
    client.handle('SignedFirmwareStatusNotification', () => ({}));
    client.handle(({ method }) => {
        throw createRPCError('NotImplemented', `test CSMS does not handle ${method}`);
    });
}

// ---------------------------------------------------------------------------- server

const clients = new Map();  // identity -> RPCServerClient (the current connection)

const server = new RPCServer({
    protocols: PROTOCOLS,
    strictMode: true,
    callTimeoutMs: 10000,
    pingIntervalMs: 30000,
});

server.auth((accept, reject, handshake) => {
    if (offline) {
        stats.rejectedConnections += 1;
        emit({ event: 'refused', identity: handshake.identity });
        reject(503, 'CSMS offline (test)');
        return;
    }
    accept({});
});

server.on('upgradeAborted', ({ error, identity }) => {
    emit({ event: 'upgradeAborted', identity, error: String(error?.message ?? error) });
});

server.on('error', (err) => emit({ event: 'serverError', error: String(err?.stack ?? err) }));

server.on('client', (client) => {
    const identity = client.identity;
    stats.connections += 1;
    clients.set(identity, client);
    const inflight = new Set();  // message ids of the station's CALLs not yet answered
    emit({ event: 'connected', identity, protocol: client.protocol });

    client.on('message', ({ message, outbound }) => {
        let frame;
        try {
            frame = JSON.parse(message.toString());
        } catch {
            return;  // not JSON: reported as badMessage by ocpp-rpc
        }
        if (!Array.isArray(frame)) return;
        const [type, id] = frame;
        if (!outbound && type === 2 && typeof id === 'string') {
            if (inflight.size > 0) {
                stats.overlappingCalls += 1;
                record('outstanding', identity, {
                    direction: 'inbound',
                    frame,
                    outstanding: [...inflight],
                    error: 'CALL received while a previous CALL was unanswered',
                });
            }
            inflight.add(id);
            stats.maxOutstanding = Math.max(stats.maxOutstanding, inflight.size);
        } else if (outbound && (type === 3 || type === 4)) {
            inflight.delete(id);
        } else if (!outbound && type === 4) {
            const [, , code, , details] = frame;
            const codes = client.protocol === 'ocpp2.0.1' ? OCPP201_ERROR_CODES : OCPP16_ERROR_CODES;
            if (!codes.has(code) || typeof details !== 'object' || details === null
                || Array.isArray(details) || frame.length !== 5) {
                record('callerror', identity, {
                    direction: 'inbound',
                    frame,
                    error: `CALLERROR with a non-${client.protocol} error code or malformed errorDetails`,
                });
            }
        }
    });

    client.on('call', ({ outbound, payload }) => {
        const [, messageId, method, params] = payload;
        if (outbound) {
            count(stats.sent, method);
            emit({ event: 'sent', identity, messageId, method, params });
        } else {
            count(stats.received, method);
            emit({ event: 'call', identity, messageId, method, params });
        }
    });

    client.on('callResult', ({ outbound, messageId, method, params, result }) => {
        if (outbound) {
            count(stats.answered, method);
            emit({ event: 'callResult', identity, messageId, method, result });
        } else {
            emit({ event: 'reply', identity, messageId, method, result });
        }
    });

    client.on('callError', ({ outbound, messageId, method, error }) => {
        if (outbound) {
            count(stats.callErrorsReceived, method);
            emit({ event: 'callError', identity, messageId, method, error: errorInfo(error) });
        } else {
            emit({ event: 'replyError', identity, messageId, method, error: errorInfo(error) });
        }
    });

    client.on('strictValidationFailure', (ev) => {
        // outbound=false: the charge point sent it (CALL params or CALLRESULT payload);
        // outbound=true: this CSMS produced it (a bug in the test, still not allowed).
        record('schema', identity, {
            direction: ev.outbound ? 'outbound' : 'inbound',
            messageType: ev.isCall ? 'CALL' : 'CALLRESULT',
            messageId: ev.messageId,
            method: ev.method,
            params: ev.params,
            result: ev.result,
            error: errorInfo(ev.error),
        });
    });

    client.on('badMessage', ({ buffer, error, response }) => {
        record('badMessage', identity, {
            direction: 'inbound',
            frame: buffer.toString(),
            error: errorInfo(error),
            response,
        });
    });

    client.on('close', ({ code, reason }) => {
        stats.disconnections += 1;
        if (clients.get(identity) === client) clients.delete(identity);
        emit({ event: 'disconnected', identity, code, reason: String(reason ?? '') });
    });

    if (client.protocol === 'ocpp2.0.1') registerHandlers201(client);
    else registerHandlers(client);
});

// ---------------------------------------------------------------------------- control

function pickClient(identity) {
    if (identity !== undefined) return clients.get(identity);
    return clients.values().next().value;  // the only (or first) connected station
}

async function command(cmd) {
    switch (cmd.cmd) {
        case 'call': {
            const client = pickClient(cmd.identity);
            if (!client) return { error: { code: 'NotConnected', message: 'no such station' } };
            try {
                const opts = cmd.timeoutMs ? { callTimeoutMs: cmd.timeoutMs } : {};
                const result = await client.call(cmd.method, cmd.params ?? {}, opts);
                return { result };
            } catch (err) {
                return { error: errorInfo(err) };
            }
        }
        case 'stats':
            return { ...stats, connected: [...clients.keys()], offline };
        case 'clients':
            return { identities: [...clients.keys()] };
        case 'offline':
            offline = Boolean(cmd.on);
            return { offline };
        case 'delay':
            answerDelayMs = Number(cmd.ms ?? 0);
            return { answerDelayMs };
        case 'disconnect': {
            const targets = cmd.identity !== undefined ? [clients.get(cmd.identity)] : [...clients.values()];
            const closed = [];
            for (const client of targets.filter(Boolean)) {
                closed.push(client.identity);
                await client.close({ code: cmd.code ?? 1001, reason: 'test disconnect', force: Boolean(cmd.force) });
            }
            return { closed };
        }
        case 'quit':
            setImmediate(shutdown);
            return { quitting: true };
        default:
            return { error: { code: 'UnknownCommand', message: String(cmd.cmd) } };
    }
}

let shuttingDown = false;
async function shutdown() {
    if (shuttingDown) return;
    shuttingDown = true;
    try {
        await server.close({ force: true });
    } finally {
        emit({ event: 'closed' });
        process.exit(0);
    }
}

async function main() {
    const httpServer = await server.listen(PORT, HOST);
    emit({
        event: 'listening',
        port: httpServer.address().port,
        host: HOST,
        ocppRpc: OCPP_RPC_VERSION,
        node: process.version,
    });

    const rl = readline.createInterface({ input: process.stdin, terminal: false });
    rl.on('line', (line) => {
        if (!line.trim()) return;
        let cmd;
        try {
            cmd = JSON.parse(line);
        } catch (err) {
            emit({ event: 'result', id: null, error: { code: 'BadCommand', message: String(err) } });
            return;
        }
        command(cmd).then(
            (reply) => emit({ event: cmd.cmd === 'stats' ? 'stats' : 'result', id: cmd.id ?? null, cmd: cmd.cmd, ...reply }),
            (err) => emit({ event: 'result', id: cmd.id ?? null, cmd: cmd.cmd, error: errorInfo(err) }),
        );
    });
    rl.on('close', shutdown);
    process.on('SIGTERM', shutdown);
    process.on('SIGINT', shutdown);
}

main().catch((err) => {
    emit({ event: 'fatal', error: String(err?.stack ?? err) });
    process.exit(1);
});

"use strict";
// Drives the npm `aria2` client over WebSocket against an aria2 JSON-RPC server, as a user's
// script would: aria2.getVersion, one addUri, then every notification until that download
// ends. Also a refused call, and a client with a wrong secret. One JSON object per line.
//
//   node client.js <host> <port> <secret> <uri> <dir>

const Aria2 = require("aria2");

const NOTIFICATIONS = [
  "onDownloadStart",
  "onDownloadPause",
  "onDownloadStop",
  "onDownloadComplete",
  "onDownloadError",
  "onBtDownloadComplete",
];
const print = (line) => console.log(JSON.stringify(line));

function refusal(promise) {
  return promise.then(
    () => ({ refused: false }),
    (error) => ({ refused: true, code: error.code, message: error.message })
  );
}

async function main() {
  const [host, port, secret, uri, dir] = process.argv.slice(2);
  const options = { host, port: Number(port), secure: false, path: "/jsonrpc" };
  const aria2 = new Aria2({ ...options, secret });
  const seen = [];
  let gid = null;
  let finish;
  const finished = new Promise((resolve) => (finish = resolve));
  const check = () => {
    if (gid && seen.some((n) => n.gid === gid && n.notification !== "onDownloadStart")) finish();
  };
  for (const name of NOTIFICATIONS) {
    aria2.on(name, ([event]) => {
      seen.push({ notification: name, gid: event.gid });
      print({ notification: name, gid: event.gid });
      check();
    });
  }

  await aria2.open();
  const version = await aria2.call("getVersion");
  print({ version: version.version });
  print({ shutdown: await refusal(aria2.call("shutdown")) });
  gid = await aria2.call("addUri", [uri], { dir });
  print({ gid });
  check();
  const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error("no end notification")), 30000));
  await Promise.race([finished, timeout]);
  await aria2.close();

  const stranger = new Aria2({ ...options, secret: "not-the-secret" });
  await stranger.open();
  print({ stranger: await refusal(stranger.call("tellActive")) });
  await stranger.close();
}

main().then(
  () => process.exit(0),
  (error) => {
    print({ error: String(error && error.message) });
    process.exit(1);
  }
);

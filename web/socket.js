// A WebSocket that reconnects by itself with back-off (0.5 s doubling up to 10 s).

const FIRST_DELAY = 500;
const MAX_DELAY = 10_000;
const PING_EVERY = 20_000;
// No frame at all (not even a pong) for this long means the link is dead.
const SILENT_LIMIT = 50_000;
// After this many failed tries in a row the indicator says "offline".
const OFFLINE_AFTER = 6;

export class LiveSocket {
  /**
   * @param {string} url ws:// or wss:// address
   * @param {{onMessage: (msg: any) => void, onStatus: (state: string, info: object) => void}} handlers
   */
  constructor(url, { onMessage, onStatus, onRefused }) {
    this.url = url;
    this.onMessage = onMessage;
    this.onStatus = onStatus;
    this.onRefused = onRefused;
    this.ws = null;
    this.delay = FIRST_DELAY;
    this.failures = 0;
    this.retryTimer = 0;
    this.lastSeen = 0;
    this.decoder = new TextDecoder();
  }

  start() {
    window.addEventListener("online", () => this.reconnectNow());
    window.addEventListener("offline", () => {
      if (!this.isOpen()) this.onStatus("offline", { retryIn: null });
    });
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible" && !this.ws) this.reconnectNow();
    });
    setInterval(() => this.heartbeat(), PING_EVERY);
    this.onStatus("reconnecting", { first: true, retryIn: null });
    this.open();
  }

  isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  /** Send a message as JSON; false when the socket is not open. */
  send(message) {
    if (!this.isOpen()) return false;
    this.ws.send(JSON.stringify(message));
    return true;
  }

  reconnectNow() {
    if (this.ws) return; // already open or opening
    clearTimeout(this.retryTimer);
    this.delay = FIRST_DELAY;
    this.open();
  }

  open() {
    clearTimeout(this.retryTimer);
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this.scheduleRetry();
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.addEventListener("open", () => {
      if (this.ws !== ws) return;
      this.delay = FIRST_DELAY;
      this.failures = 0;
      this.lastSeen = Date.now();
      this.onStatus("connected", {});
    });
    ws.addEventListener("message", (event) => {
      if (this.ws !== ws) return;
      this.lastSeen = Date.now();
      const text = typeof event.data === "string" ? event.data : this.decoder.decode(event.data);
      let message;
      try {
        message = JSON.parse(text);
      } catch {
        return; // not JSON: nothing the page can use
      }
      if (message && typeof message === "object") {
        try {
          this.onMessage(message);
        } catch (error) {
          console.error("Could not handle a server message", error);
        }
      }
    });
    ws.addEventListener("close", (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      // 1008: the server refused this page (another site's origin, or no access token); its
      // reason says which, and trying again will not change it until the user acts
      if (event.code === 1008 && this.onRefused) this.onRefused(event.reason || "refused");
      this.scheduleRetry();
    });
    // An "error" event is always followed by "close"; the retry starts there.
  }

  scheduleRetry() {
    this.failures += 1;
    const wait = this.delay;
    this.delay = Math.min(this.delay * 2, MAX_DELAY);
    const offline = navigator.onLine === false || this.failures >= OFFLINE_AFTER;
    this.onStatus(offline ? "offline" : "reconnecting", { retryIn: wait });
    this.retryTimer = setTimeout(() => this.open(), wait);
  }

  heartbeat() {
    if (!this.isOpen()) return;
    if (Date.now() - this.lastSeen > SILENT_LIMIT) {
      // A dead link may take long to report "close": drop it and start over now.
      const dead = this.ws;
      this.ws = null;
      dead.close();
      this.scheduleRetry();
      return;
    }
    this.send({ type: "ping" });
  }
}

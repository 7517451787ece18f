// A small graphql-transport-ws client (the protocol of `GET /graphql/ws`): one socket,
// any number of subscriptions, reconnection with backoff (every subscription is sent again
// after each `connection_ack`, also one the server completed as it shut down). The token
// travels in `connection_init`, never in the URL.
//
//   const ws = connect("/graphql/ws", () => ({ Authorization: "Bearer " + key }), {
//     onState: (state, detail) => …,   // "connecting" | "open" | "closed" | "refused"
//   });
//   const stop = ws.subscribe(query, variables, { next: (data) => …, error: (errors) => … });
//   stop();  ws.close();

const PROTOCOL = "graphql-transport-ws";
// Close codes after which trying again cannot help: the token is bad, expired or revoked.
const FINAL_CODES = new Set([4401, 4403, 4400]);

export function connect(path, connectionParams, { onState = () => {} } = {}) {
  const url = new URL(path, location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const subscriptions = new Map();
  let socket = null;
  let acked = false;
  let closedByUs = false;
  let retry = 0;
  let nextId = 1;
  let timer = null;

  const send = (message) => {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
  };
  const start = (id, sub) => send({ id, type: "subscribe", payload: { query: sub.query, variables: sub.variables } });

  function open() {
    onState("connecting");
    acked = false;
    socket = new WebSocket(url, PROTOCOL);
    socket.addEventListener("open", () => {
      send({ type: "connection_init", payload: connectionParams() });
    });
    socket.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      switch (message.type) {
        case "connection_ack":
          acked = true;
          retry = 0;
          onState("open");
          for (const [id, sub] of subscriptions) start(id, sub);
          break;
        case "ping":
          send({ type: "pong" });
          break;
        case "next": {
          const sub = subscriptions.get(message.id);
          if (!sub) break;
          if (message.payload.errors) sub.error(message.payload.errors);
          else sub.next(message.payload.data);
          break;
        }
        case "error": {
          const sub = subscriptions.get(message.id);
          subscriptions.delete(message.id);
          if (sub) sub.error(message.payload);
          break;
        }
        case "complete":
          // The server ends its streams when it stops (then closes the socket, 1001): keep
          // the subscription, so it is sent again once a server acknowledges a new
          // connection. A stream the caller stopped was already forgotten.
          break;
      }
    });
    socket.addEventListener("close", (event) => {
      socket = null;
      if (closedByUs) return;
      if (FINAL_CODES.has(event.code) || (!acked && event.code === 4403)) {
        onState("refused", event.reason || String(event.code));
        return;
      }
      onState("closed", event.reason || String(event.code));
      const delay = Math.min(30000, 500 * 2 ** retry++);
      timer = setTimeout(open, delay);
    });
  }

  open();
  return {
    subscribe(query, variables, handlers) {
      const id = String(nextId++);
      const sub = { query, variables, next: handlers.next, error: handlers.error || (() => {}) };
      subscriptions.set(id, sub);
      if (acked) start(id, sub);
      return () => {
        if (subscriptions.delete(id)) send({ id, type: "complete" });
      };
    },
    close() {
      closedByUs = true;
      clearTimeout(timer);
      if (socket) socket.close(1000, "bye");
    },
  };
}

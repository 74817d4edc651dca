/*! event-ingest browser client: batches events and sends them to event-ingest.
 *
 *   <script src="https://ingest.example.com/v1/client.js"></script>
 *   <script>
 *     const ingest = eventIngest({ url: "https://ingest.example.com", key: "pk_...", table: "pageviews" });
 *     ingest.track({ page: location.pathname });
 *   </script>
 *
 * Options: url (the service), key (a browser key: one with origins), table (default: the
 * events table), batchSize (50), flushMs (2000), deviceIdField ("device_id") and
 * sessionField ("session"): a random id kept in localStorage / sessionStorage, added to each
 * event under that name (null: not added). Each event gets client_time; each batch sent_at
 * and an Idempotency-Key, so a batch sent again after a lost answer is stored once.
 * Retries with back-off, honouring Retry-After on 503 and 429; stops on other 4xx answers.
 * What is left when the page is hidden or left goes with navigator.sendBeacon.
 */
(function (root) {
  "use strict";

  function uuid() {
    if (root.crypto && root.crypto.randomUUID) return root.crypto.randomUUID();
    var b = new Uint8Array(16);
    root.crypto.getRandomValues(b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    var h = Array.prototype.map.call(b, function (x) { return (x + 0x100).toString(16).slice(1); }).join("");
    return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" + h.slice(16, 20) + "-" + h.slice(20);
  }

  // An id kept in `storage` under `name` (a new one where storage is not available).
  function kept(storage, name) {
    try {
      var id = storage.getItem(name);
      if (!id) { id = uuid(); storage.setItem(name, id); }
      return id;
    } catch (e) {
      return uuid();
    }
  }

  root.eventIngest = function (options) {
    var base = String(options.url).replace(/\/+$/, "");
    var path = options.table ? "/v1/tables/" + encodeURIComponent(options.table) : "/v1/events";
    var url = base + path + "?key=" + encodeURIComponent(options.key);
    var batchSize = options.batchSize || 50;
    var flushMs = options.flushMs || 2000;
    var deviceField = options.deviceIdField === undefined ? "device_id" : options.deviceIdField;
    var sessionField = options.sessionField === undefined ? "session" : options.sessionField;
    var device = deviceField ? kept(root.localStorage, "event-ingest-device") : null;
    var session = sessionField ? kept(root.sessionStorage, "event-ingest-session") : null;
    var queue = [];      // events not yet in a batch
    var inFlight = null; // the batch being sent: { events, id }
    var timer = null;
    var stopped = false;

    function schedule(ms) {
      if (timer === null) timer = setTimeout(function () { timer = null; flush(); }, ms);
    }

    function track(fields) {
      if (stopped) return;
      var event = { client_time: new Date().toISOString() };
      if (device) event[deviceField] = device;
      if (session) event[sessionField] = session;
      for (var name in fields) if (Object.prototype.hasOwnProperty.call(fields, name)) event[name] = fields[name];
      queue.push(event);
      if (queue.length >= batchSize) flush(); else schedule(flushMs);
    }

    function body(batch) {
      return JSON.stringify({ sent_at: new Date().toISOString(), events: batch.events });
    }

    // Sends the batch in flight (or the next one), retrying until it is answered.
    function flush(delay) {
      if (stopped || (inFlight && delay === undefined)) return Promise.resolve();
      if (!inFlight) {
        if (queue.length === 0) return Promise.resolve();
        inFlight = { events: queue.splice(0, batchSize), id: uuid(), attempt: 0 };
      }
      var batch = inFlight;
      return fetch(url, {
        method: "POST",
        headers: { "Content-Type": "application/json", "Idempotency-Key": batch.id },
        body: body(batch),
        keepalive: true
      }).then(function (response) {
        if (response.ok) { done(); return; }
        if (response.status === 503 || response.status === 429) {
          var after = Number(response.headers.get("Retry-After"));
          return retry(after > 0 ? after * 1000 : backoff(batch));
        }
        // Another 4xx or 5xx: sending the same batch again would not help.
        if (root.console) console.warn("event-ingest: batch refused (" + response.status + ")");
        if (response.status === 401 || response.status === 403) stopped = true;
        done();
      }, function () {
        return retry(backoff(batch));
      });
    }

    function done() {
      inFlight = null;
      if (queue.length > 0) flush();
    }

    function backoff(batch) {
      batch.attempt += 1;
      return Math.min(30000, 500 * Math.pow(2, batch.attempt)) * (0.75 + Math.random() / 2);
    }

    function retry(ms) {
      return new Promise(function (resolve) {
        setTimeout(function () { resolve(flush(true)); }, ms);
      });
    }

    // The page is going away: what is left goes as beacons (text/plain, the key in the URL).
    function leave() {
      if (stopped || !root.navigator || !root.navigator.sendBeacon) return;
      // The batch in flight is not sent again: its request (keepalive) outlives the page.
      while (queue.length > 0) {
        root.navigator.sendBeacon(url, body({ events: queue.splice(0, batchSize) }));
      }
    }

    root.addEventListener("pagehide", leave);
    root.addEventListener("visibilitychange", function () {
      if (root.document.visibilityState === "hidden") leave();
    });

    return { track: track, flush: function () { return flush(); } };
  };
})(typeof window !== "undefined" ? window : this);

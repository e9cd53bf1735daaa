// What every page shares: finding and making elements, the API key kept for this browser tab, and calls to this
// server's API (JSON in and out; a failed call throws an Error with the server's message and the HTTP status).
const $ = (id) => document.getElementById(id);
function key() { return sessionStorage.getItem("jiangxin-key") || ""; }
// keep the key typed into #key for this tab and clear the field
function saveKey() { sessionStorage.setItem("jiangxin-key", $("key").value.trim()); $("key").value = ""; }
function auth() { return { "Authorization": "Bearer " + key() }; }
function showKey() { $("key-state").textContent = key() ? "已保存" : "未设置"; }
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = text;
  return e;
}
async function api(method, path, body) {
  const r = await fetch(path, { method, headers: { ...auth(), "Content-Type": "application/json" },
                                body: body ? JSON.stringify(body) : undefined });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) {
    const error = new Error((data.error && data.error.message) || ("HTTP " + r.status));
    error.status = r.status;
    throw error;
  }
  return data;
}

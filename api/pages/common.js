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
// What a failed call means, said in the pages' language; the server's own message follows for the details.
const STATUS_TEXT = {
  401: "API 密钥未填写或无效：请在页面上方填入密钥并保存",
  403: "当前密钥没有执行此操作的权限",
  404: "没有找到（可能已被删除，或不属于当前密钥）",
  409: "操作与当前状态冲突（可能已被他人处理），请刷新后再试",
  413: "提交的内容过大",
  422: "输入有误",
  429: "请求过于频繁，请稍后再试",
  503: "服务暂时繁忙（索引正在更新），请稍后再试",
};
function failure(status, message) {
  const said = STATUS_TEXT[status] || ("请求失败（HTTP " + status + "）");
  return message ? said + "。" + message : said;
}
async function api(method, path, body) {
  const r = await fetch(path, { method, headers: { ...auth(), "Content-Type": "application/json" },
                                body: body ? JSON.stringify(body) : undefined });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) {
    const error = new Error(failure(r.status, data.error && data.error.message));
    error.status = r.status;
    throw error;
  }
  return data;
}

// Melvin's frontend (stands in for the React + Tailwind bundle the seed describes).
fetch("/ready").then(r => r.json()).then(s => {
  document.getElementById("status").textContent = Object.entries(s).map(([k, v]) => k + ": " + (v ? "up" : "down")).join(", ");
});
document.getElementById("login").addEventListener("submit", e => {
  e.preventDefault();
  const f = new FormData(e.target);
  fetch("/api/login", {method: "POST", body: JSON.stringify({email: f.get("email"), password: f.get("password")})})
    .then(r => r.json()).then(j => alert(JSON.stringify(j)));
});

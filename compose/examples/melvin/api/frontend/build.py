"""The frontend build (stands in for `npm ci && npm run build`): copies src/ to dist/ with the
script renamed by its content hash, as bundlers do, so the api serves an immutable asset."""
import hashlib
import os
import shutil

src, dist = "src", "dist"
shutil.rmtree(dist, ignore_errors=True)
os.makedirs(os.path.join(dist, "assets"))
with open(os.path.join(src, "app.js"), "rb") as f:
    js = f.read()
name = "assets/app-%s.js" % hashlib.sha256(js).hexdigest()[:8]
with open(os.path.join(dist, name), "wb") as f:
    f.write(js)
with open(os.path.join(src, "index.html")) as f:
    html = f.read().replace("{{APP_JS}}", name)
with open(os.path.join(dist, "index.html"), "w") as f:
    f.write(html)
print("built", name)

// Console behaviour without a build step: tabs of property sheets and the tree's twisties.
document.addEventListener("click", (event) => {
  const tab = event.target.closest("[data-tab]");
  if (tab) {
    const sheet = tab.closest("form");
    sheet.querySelectorAll("[data-tab]").forEach((t) => t.setAttribute("aria-selected", String(t === tab)));
    sheet.querySelectorAll(".tabpanel").forEach((p) => { p.hidden = p.id !== tab.dataset.tab; });
    return;
  }
  const twisty = event.target.closest("[data-twisty]");
  if (twisty) {
    const item = twisty.closest("[role=treeitem]");
    item.setAttribute("aria-expanded", item.getAttribute("aria-expanded") === "true" ? "false" : "true");
    return;
  }
  const toggle = event.target.closest("[data-toggle-tree]");
  if (toggle) {
    const tree = document.getElementById("tree");
    if (tree) {
      tree.classList.toggle("collapsed");
      toggle.setAttribute("aria-expanded", String(!tree.classList.contains("collapsed")));
    }
  }
});

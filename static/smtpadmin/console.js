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
  const back = event.target.closest("[data-history-back]");
  if (back && window.history.length > 1) {
    // Cancel goes back to where the person came from; without a history, the link's own target.
    event.preventDefault();
    window.history.back();
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

// Formset tables (a connector's address spaces): "Add" copies the empty row of the <template>.
document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-add-row], [data-schedule-buttons]").forEach((el) => { el.hidden = false; });
});
document.addEventListener("click", (event) => {
  const add = event.target.closest("[data-add-row]");
  if (!add) return;
  const part = add.closest("[data-formset]");
  const prefix = part.dataset.formset;
  const total = part.querySelector(`input[name="${prefix}-TOTAL_FORMS"]`);
  const html = part.querySelector("template[data-row-template]").innerHTML.replaceAll("__prefix__", total.value);
  part.querySelector("[data-rows]").insertAdjacentHTML("beforeend", html);
  total.value = String(Number(total.value) + 1);
  const rows = part.querySelectorAll("[data-rows] tr");
  rows[rows.length - 1].querySelector("input[type=text]")?.focus();
});

// The weekly schedule grid: press on a quarter hour and drag to set or clear a range; "All" and
// "None" fill it. Any change selects "Use custom schedule". Keyboard (space) toggles as usual.
(() => {
  let painting = null; // true = checking, false = clearing, null = not dragging
  const useCustom = (grid) => {
    const select = grid.dataset.modeField && document.getElementById(grid.dataset.modeField);
    if (select && select.value !== "custom") select.value = "custom";
  };
  document.addEventListener("mousedown", (event) => {
    const slot = event.target.closest("[data-schedule] input.slot");
    if (!slot || slot.disabled || event.button !== 0) return;
    event.preventDefault();
    painting = !slot.checked;
    slot.checked = painting;
    useCustom(slot.closest("[data-schedule]"));
  });
  document.addEventListener("mouseover", (event) => {
    if (painting === null) return;
    const slot = event.target.closest("[data-schedule] input.slot");
    if (slot && !slot.disabled) slot.checked = painting;
  });
  document.addEventListener("mouseup", () => { painting = null; });
  document.addEventListener("click", (event) => {
    const slot = event.target.closest("[data-schedule] input.slot");
    // A mouse click was handled on mousedown; a keyboard "click" (detail 0) toggles natively.
    if (slot && event.detail !== 0) { event.preventDefault(); return; }
    if (slot) { useCustom(slot.closest("[data-schedule]")); return; }
    const fill = event.target.closest("[data-schedule] [data-fill]");
    if (!fill) return;
    const grid = fill.closest("[data-schedule]");
    grid.querySelectorAll("input.slot:not(:disabled)").forEach((s) => { s.checked = fill.dataset.fill === "1"; });
    useCustom(grid);
  });
})();

// A picker's search box is inside the sheet's form: Enter searches (htmx), never submits.
document.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && event.target.closest("[data-picker-search]")) event.preventDefault();
});

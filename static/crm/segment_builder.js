// The visual rule builder of the segment page (admin). No framework, no build step.
//
// It reads the rule schema from the admin's schema.json (kinds, fields, operators, labels in Korean and English),
// draws the rule document as a tree of groups and conditions, and writes every change back into the rules
// textarea, which is what the form saves. "JSON (advanced)" shows that textarea: edits there redraw the tree.
// After each change (debounced) the rules are POSTed to preview.json: the live member count and a sample, or the
// validator's messages, shown at the condition they name (each node carries its path, e.g. root.children[1]).
//
// The document is the single source of truth: handlers change it in place, then call changed(redraw). Inputs
// where the user types do not redraw the tree (the caret stays); selects that change the shape of a node do.
(function () {
  "use strict";

  var DEBOUNCE_MS = 400;
  var LANG = (document.documentElement.lang || "ko").slice(0, 2) === "en" ? "en" : "ko";
  var gettext = window.gettext || function (text) { return text; };
  var ngettext = window.ngettext || function (one, many, n) { return n === 1 ? one : many; };
  var interpolate = window.interpolate || function (text, args) { return text.replace("%s", args[0]); };

  // --- Small helpers -------------------------------------------------------------------------------------------

  function label(labels) {
    return labels ? labels[LANG] || labels.en || "" : "";
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (key === "text") { node.textContent = attrs[key]; }
      else if (key.slice(0, 2) === "on") { node.addEventListener(key.slice(2), attrs[key]); }
      else if (attrs[key] !== undefined && attrs[key] !== null && attrs[key] !== false) {
        node.setAttribute(key, attrs[key] === true ? "" : attrs[key]);
      }
    });
    (children || []).forEach(function (child) { if (child) { node.appendChild(child); } });
    return node;
  }

  function options(choices, current) {
    return choices.map(function (choice) {
      return el("option", { value: choice.value, text: choice.label, selected: String(choice.value) === String(current) });
    });
  }

  function selectBox(choices, current, onChange, attrs) {
    var box = el("select", attrs, options(choices, current));
    box.addEventListener("change", function () { onChange(box.value); });
    return box;
  }

  function button(text, onClick, attrs) {
    return el("button", Object.assign({ type: "button", text: text, onclick: onClick }, attrs || {}));
  }

  function checkbox(text, checked, onChange, attrs) {
    var box = el("input", { type: "checkbox", checked: checked });
    box.addEventListener("change", function () { onChange(box.checked); });
    return el("label", Object.assign({ class: "loop-rb-check" }, attrs || {}), [box, document.createTextNode(text)]);
  }

  function clone(value) {
    return JSON.parse(JSON.stringify(value));
  }

  function isObject(value) {
    return value !== null && typeof value === "object" && !Array.isArray(value);
  }

  function isGroup(node) {
    return isObject(node) && node.type === "group" && Array.isArray(node.children);
  }

  // The entry of a schema list whose `key` (a field's "name", a value type's "type") is `value`.
  function find(list, key, value) {
    return (list || []).filter(function (item) { return item[key] === value; })[0];
  }

  // --- Values: from the inputs to the document -----------------------------------------------------------------

  function parseScalar(text, type) {
    text = text.trim();
    if (text === "") { return undefined; }
    if (type === "number") {
      var number = Number(text);
      return isNaN(number) ? text : number;  // the server names a value that is not a number
    }
    return text;
  }

  function parseList(text, type) {
    return text.split(",").map(function (part) { return parseScalar(part, type); })
      .filter(function (item) { return item !== undefined; });
  }

  function setOrDelete(object, key, value) {
    if (value === undefined || (Array.isArray(value) && value.length === 0)) { delete object[key]; }
    else { object[key] = value; }
  }

  function inputType(type) {
    if (type === "number") { return "number"; }
    if (type === "date" || type === "datetime") { return "date"; }
    return "text";
  }

  // --- The builder ---------------------------------------------------------------------------------------------

  function RuleBuilder(container, textarea, schema, choices) {
    this.container = container;
    this.textarea = textarea;
    this.schema = schema;
    this.choices = choices;
    this.previewUrl = container.dataset.previewUrl;
    this.segmentId = container.dataset.segmentId ? Number(container.dataset.segmentId) : null;
    this.timer = null;
    this.request = null;
    this.sequence = 0;
  }

  RuleBuilder.prototype.start = function () {
    this.tree = el("div", { class: "loop-rb-tree" });
    this.preview = this.renderPreviewBox();
    this.jsonToggle = button(gettext("JSON (advanced)"), this.toggleJson.bind(this), {
      class: "loop-rb-json-toggle", "aria-expanded": "false",
    });
    this.container.append(this.tree, this.preview, el("p", {}, [this.jsonToggle]));
    this.container.hidden = false;
    this.textarea.addEventListener("input", this.readJson.bind(this));
    this.load();
  };

  RuleBuilder.prototype.load = function () {
    var parsed;
    try { parsed = JSON.parse(this.textarea.value.trim() || "{}"); } catch (error) {
      this.showJson(true);  // the form came back with JSON that does not parse: show it as it is
      this.showJsonError();
      return;
    }
    this.useDocument(parsed);
    this.showJson(!this.drawable());
    this.draw();
    this.requestPreview();
  };

  RuleBuilder.prototype.drawable = function () {
    return isObject(this.doc) && isGroup(this.doc.root);
  };

  RuleBuilder.prototype.changed = function (redraw) {
    if (redraw) { this.draw(); }
    this.textarea.value = JSON.stringify(this.doc, null, 2);
    this.schedulePreview();
  };

  // -- the JSON view --

  RuleBuilder.prototype.showJson = function (visible) {
    this.textarea.hidden = !visible;
    this.jsonToggle.setAttribute("aria-expanded", visible ? "true" : "false");
  };

  RuleBuilder.prototype.toggleJson = function () {
    this.showJson(this.textarea.hidden);
  };

  RuleBuilder.prototype.readJson = function () {
    var parsed;
    try { parsed = JSON.parse(this.textarea.value.trim() || "{}"); } catch (error) {
      this.showJsonError();
      return;
    }
    this.useDocument(parsed);
    this.draw();
    this.schedulePreview();
  };

  // Empty (null, {}) means every contact: the builder starts from the schema's empty document.
  RuleBuilder.prototype.useDocument = function (parsed) {
    var empty = parsed === null || (isObject(parsed) && !Object.keys(parsed).length);
    this.doc = empty ? clone(this.schema.empty_rules) : parsed;
  };

  RuleBuilder.prototype.showJsonError = function () {
    this.cancelPreview();
    this.setCount(null, gettext("The JSON is not valid: fix it in the box below, or empty it to start over."));
  };

  // -- drawing the tree --

  RuleBuilder.prototype.draw = function () {
    this.tree.replaceChildren();
    if (!this.drawable()) {
      this.tree.append(el("p", { class: "errornote", text: gettext("The builder cannot show these rules: edit them as JSON below.") }));
      return;
    }
    this.tree.append(this.renderGroup(this.doc.root, "root", null, 0, 1));
  };

  RuleBuilder.prototype.renderNode = function (node, path, siblings, index, depth) {
    if (isGroup(node)) { return this.renderGroup(node, path, siblings, index, depth); }
    if (isObject(node) && this.schema.kinds[node.type] && this.editors[node.type]) {
      return this.renderCondition(node, path, siblings, index);
    }
    return this.renderUnknown(node, path, siblings, index);
  };

  RuleBuilder.prototype.removeButton = function (siblings, index) {
    var self = this;
    return button("×", function () { siblings.splice(index, 1); self.changed(true); }, {
      class: "loop-rb-remove", title: gettext("Remove"), "aria-label": gettext("Remove"),
    });
  };

  RuleBuilder.prototype.notCheckbox = function (node) {
    var self = this;
    return checkbox(gettext("NOT"), node.negate === true, function (checked) {
      setOrDelete(node, "negate", checked ? true : undefined);
      self.changed(true);
    }, { class: "loop-rb-check loop-rb-not", title: gettext("Turn this into its opposite") });
  };

  RuleBuilder.prototype.renderGroup = function (group, path, siblings, index, depth) {
    var self = this;
    var opSelect = selectBox(this.choiceList(this.schema.kinds.group.ops), group.op || "and", function (value) {
      group.op = value;
      self.changed(true);
    }, { class: "loop-rb-group-op", "aria-label": gettext("Combine the conditions with") });
    var head = el("div", { class: "loop-rb-head" }, [
      this.notCheckbox(group), opSelect, siblings ? this.removeButton(siblings, index) : null,
    ]);
    var list = el("ol", { class: "loop-rb-children" }, group.children.map(function (child, i) {
      return el("li", {}, [self.renderNode(child, path + ".children[" + i + "]", group.children, i, depth + 1)]);
    }));
    return el("div", {
      class: "loop-rb-node loop-rb-group" + (group.negate ? " loop-rb-negated" : ""), "data-path": path,
    }, [head, list, this.emptyGroupHint(group), this.addBar(group, depth), el("ul", { class: "loop-rb-errors" })]);
  };

  RuleBuilder.prototype.emptyGroupHint = function (group) {
    if (group.children.length) { return null; }
    var everybody = (group.op || "and") === "and" ? !group.negate : group.negate;
    return el("p", {
      class: "loop-rb-hint",
      text: everybody ? gettext("No conditions yet: every contact matches.") : gettext("No conditions yet: nobody matches."),
    });
  };

  // Under each group: a kind picker with its "add" button (a select that added on change would add a condition
  // for every arrow key pressed on it), and "add a group".
  RuleBuilder.prototype.addBar = function (group, depth) {
    var self = this;
    var picker = el("select", { class: "loop-rb-kind-picker", "aria-label": gettext("kind of condition") },
      this.kindOptionGroups());
    var addCondition = button(gettext("+ Add a condition"), function () {
      group.children.push(self.newCondition(picker.value));
      self.changed(true);
    }, { class: "loop-rb-add-condition" });
    var addGroup = button(gettext("+ Add a group"), function () {
      group.children.push({ type: "group", op: group.op === "or" ? "and" : "or", children: [] });
      self.changed(true);
    }, { class: "loop-rb-add-group", disabled: depth >= this.schema.limits.depth });
    return el("div", { class: "loop-rb-add" }, [picker, addCondition, addGroup]);
  };

  RuleBuilder.prototype.kindOptionGroups = function () {
    var kinds = this.schema.kinds;
    return this.schema.categories.filter(function (category) { return category.value !== "logic"; })
      .map(function (category) {
        var names = Object.keys(kinds).filter(function (name) { return kinds[name].category === category.value; });
        return el("optgroup", { label: label(category.label) }, names.map(function (name) {
          return el("option", { value: name, text: label(kinds[name].label), title: label(kinds[name].help) });
        }));
      });
  };

  RuleBuilder.prototype.renderCondition = function (node, path, siblings, index) {
    var kind = this.schema.kinds[node.type];
    var membership = kind.category === "membership";
    var head = el("div", { class: "loop-rb-head" }, [
      el("strong", { class: "loop-rb-kind", text: label(kind.label) }),
      membership ? null : this.notCheckbox(node),
      this.removeButton(siblings, index),
    ]);
    var body = el("div", { class: "loop-rb-body" }, this.editors[node.type].call(this, node, path, kind));
    return el("div", {
      class: "loop-rb-node loop-rb-condition" + (node.negate ? " loop-rb-negated" : ""),
      "data-path": path, "data-type": node.type,
    }, [head, el("p", { class: "loop-rb-help", text: label(kind.help) }), body, el("ul", { class: "loop-rb-errors" })]);
  };

  RuleBuilder.prototype.renderUnknown = function (node, path, siblings, index) {
    return el("div", { class: "loop-rb-node loop-rb-condition loop-rb-unknown", "data-path": path }, [
      el("div", { class: "loop-rb-head" }, [
        el("strong", { text: gettext("Condition the builder cannot show (edit it as JSON)") }),
        this.removeButton(siblings, index),
      ]),
      el("code", { text: JSON.stringify(node) }),
      el("ul", { class: "loop-rb-errors" }),
    ]);
  };

  RuleBuilder.prototype.choiceList = function (choices) {
    return (choices || []).map(function (choice) { return { value: choice.value, label: label(choice.label) }; });
  };

  // -- new conditions: the first field, its first operator --

  RuleBuilder.prototype.newCondition = function (type) {
    var kind = this.schema.kinds[type];
    var node = { type: type };
    if (kind.fields) { this.resetPredicate(node, kind.fields[0], kind.fields[0].name); }
    var defaults = {
      attribute: function () { return { key: "", value_type: "text", op: "eq" }; },
      event: function () { return { op: "did" }; },
      coupon: function () { return { state: kind.states[0].value }; },
      reachable: function () { return { channel: kind.channels[0].value }; },
      consent: function () { return { purpose: kind.purposes[0].value, state: kind.states[0].value }; },
      list: this.firstChoice.bind(this, "lists", "list", "id"),
      segment: this.firstChoice.bind(this, "segments", "segment", "id"),
      tag: function () { return { tag: "" }; },
    };
    return Object.assign(node, defaults[type] ? defaults[type]() : {});
  };

  RuleBuilder.prototype.firstChoice = function (collection, key, attribute) {
    var first = this.choices[collection][0];
    var node = {};
    node[key] = first ? first[attribute] : null;
    return node;
  };

  RuleBuilder.prototype.resetPredicate = function (target, spec, fieldName) {
    if (fieldName !== undefined) { target.field = fieldName; }
    target.op = spec.ops[0];
    delete target.value;
    delete target.unit;
    this.defaultUnit(target, spec);
  };

  RuleBuilder.prototype.defaultUnit = function (target, spec) {
    var op = this.schema.ops[target.op];
    if (op && op.value === "amount") {
      var units = spec.units || ["days"];
      target.unit = units.indexOf("days") >= 0 ? "days" : units[0];
    }
  };

  // -- predicates: operator and value inputs for a field of a value type --

  RuleBuilder.prototype.predicate = function (target, spec, path) {
    var self = this;
    var ops = this.schema.ops;
    var opSelect = selectBox(spec.ops.map(function (op) { return { value: op, label: label(ops[op].label) }; }),
      target.op, function (value) {
        var before = ops[target.op] ? ops[target.op].value : null;
        target.op = value;
        if (ops[value].value !== before) {
          delete target.value;
          delete target.unit;
          self.defaultUnit(target, spec);
        }
        self.changed(true);
      }, { class: "loop-rb-op", "data-path": path + ".op", "aria-label": gettext("operator") });
    return [opSelect].concat(this.valueInputs(target, spec, path));
  };

  RuleBuilder.prototype.valueInputs = function (target, spec, path) {
    var op = this.schema.ops[target.op];
    var shape = op ? op.value : "none";
    if (shape === "scalar") { return [this.scalarInput(target, spec, path + ".value", null)]; }
    if (shape === "list") { return [this.listInput(target, spec, path + ".value")]; }
    if (shape === "pair") {
      return [this.scalarInput(target, spec, path + ".value[0]", 0), el("span", { text: "~" }),
        this.scalarInput(target, spec, path + ".value[1]", 1)];
    }
    if (shape === "amount") { return this.amountInputs(target, spec, path); }
    return [];
  };

  RuleBuilder.prototype.scalarInput = function (target, spec, path, pairIndex) {
    var self = this;
    var current = pairIndex === null ? target.value : (Array.isArray(target.value) ? target.value[pairIndex] : undefined);
    var box = el("input", {
      type: inputType(spec.type), class: "loop-rb-value", "data-path": path, value: current === undefined ? "" : current,
      step: spec.type === "number" ? (spec.integer ? "1" : "any") : null, "aria-label": gettext("value"),
    });
    box.addEventListener("input", function () {
      var value = parseScalar(box.value, spec.type);
      if (pairIndex === null) { setOrDelete(target, "value", value); }
      else {
        var pair = Array.isArray(target.value) ? target.value : [null, null];
        pair[pairIndex] = value === undefined ? null : value;
        target.value = pair;
      }
      self.changed(false);
    });
    return box;
  };

  RuleBuilder.prototype.listInput = function (target, spec, path) {
    var self = this;
    var box = el("input", {
      type: "text", class: "loop-rb-value loop-rb-list", "data-path": path,
      value: Array.isArray(target.value) ? target.value.join(", ") : "",
      placeholder: gettext("values separated by commas"), "aria-label": gettext("values"),
    });
    box.addEventListener("input", function () {
      setOrDelete(target, "value", parseList(box.value, spec.type));
      self.changed(false);
    });
    return box;
  };

  RuleBuilder.prototype.amountInputs = function (target, spec, path) {
    var self = this;
    var amount = el("input", {
      type: "number", min: "1", step: "1", class: "loop-rb-value loop-rb-amount", "data-path": path + ".value",
      value: target.value === undefined ? "" : target.value, "aria-label": gettext("how many"),
    });
    amount.addEventListener("input", function () {
      setOrDelete(target, "value", parseScalar(amount.value, "number"));
      self.changed(false);
    });
    var units = this.schema.units.filter(function (unit) { return (spec.units || ["days"]).indexOf(unit.value) >= 0; });
    var unit = selectBox(this.choiceList(units), target.unit || "days", function (value) {
      target.unit = value;
      self.changed(false);
    }, { class: "loop-rb-unit", "data-path": path + ".unit", "aria-label": gettext("unit") });
    return [amount, unit];
  };

  // -- a field picker followed by the predicate (contact field, cart, orders, coupon and wishlist items) --

  RuleBuilder.prototype.fieldPredicate = function (target, fields, path) {
    var self = this;
    var spec = find(fields, "name", target.field) || fields[0];
    var fieldSelect = selectBox(fields.map(function (field) { return { value: field.name, label: label(field.label) }; }),
      spec.name, function (value) {
        self.resetPredicate(target, find(fields, "name", value), value);
        self.changed(true);
      }, { class: "loop-rb-field", "data-path": path + ".field", "aria-label": gettext("field") });
    var parts = [fieldSelect].concat(this.predicate(target, spec, path));
    if (spec.help) { parts.push(el("span", { class: "loop-rb-field-help", text: label(spec.help) })); }
    return parts;
  };

  // A text input bound to target[key]; an optional key is left out of the document while the input is empty.
  RuleBuilder.prototype.textInput = function (target, key, path, attrs, optional) {
    var self = this;
    var box = el("input", Object.assign({
      type: "text", class: "loop-rb-text", "data-path": path + "." + key, value: target[key] || "",
    }, attrs));
    box.addEventListener("input", function () {
      setOrDelete(target, key, optional && box.value.trim() === "" ? undefined : box.value);
      self.changed(false);
    });
    return box;
  };

  RuleBuilder.prototype.typedPredicate = function (target, types, path, typeLabel) {
    var self = this;
    var spec = find(types, "type", target.value_type) || types[0];
    var typeSelect = selectBox(types.map(function (type) { return { value: type.type, label: label(type.label) }; }),
      spec.type, function (value) {
        target.value_type = value;
        self.resetPredicate(target, find(types, "type", value));
        self.changed(true);
      }, { class: "loop-rb-value-type", "data-path": path + ".value_type", "aria-label": typeLabel, title: typeLabel });
    return [typeSelect].concat(this.predicate(target, spec, path));
  };

  RuleBuilder.prototype.whereList = function (node, path, newItem, renderItem, addText) {
    var self = this;
    var items = Array.isArray(node.where) ? node.where : [];
    var rows = items.map(function (item, i) {
      var remove = button("×", function () {
        items.splice(i, 1);
        setOrDelete(node, "where", items);
        self.changed(true);
      }, { class: "loop-rb-remove", title: gettext("Remove"), "aria-label": gettext("Remove") });
      return el("li", { "data-path": path + ".where[" + i + "]" }, renderItem(item, path + ".where[" + i + "]").concat([remove]));
    });
    var add = button(addText, function () {
      node.where = items.concat([newItem()]);
      self.changed(true);
    }, { class: "loop-rb-add-where" });
    return el("div", { class: "loop-rb-where" }, [el("ul", {}, rows), add]);
  };

  RuleBuilder.prototype.includeSelect = function (node) {
    var self = this;
    return selectBox([
      { value: "in", label: gettext("is in") }, { value: "out", label: gettext("is not in") },
    ], node.negate ? "out" : "in", function (value) {
      setOrDelete(node, "negate", value === "out" ? true : undefined);
      self.changed(true);
    }, { class: "loop-rb-include", "aria-label": gettext("include or exclude") });
  };

  RuleBuilder.prototype.refSelect = function (node, key, collection, path) {
    var self = this;
    var items = this.choices[collection].map(function (item) { return { value: item.id, label: item.name + " (#" + item.id + ")" }; });
    if (node[key] && !items.some(function (item) { return item.value === node[key]; })) {
      items.unshift({ value: node[key], label: "#" + node[key] });
    }
    if (!items.length) { items = [{ value: "", label: gettext("(none yet)") }]; }
    return selectBox(items, node[key], function (value) {
      node[key] = value ? Number(value) : null;
      self.changed(false);
    }, { class: "loop-rb-ref", "data-path": path + "." + key });
  };

  // -- one editor per kind: returns the inputs of the condition's body --

  RuleBuilder.prototype.editors = {
    field: function (node, path, kind) { return this.fieldPredicate(node, kind.fields, path); },
    cart: function (node, path, kind) { return this.fieldPredicate(node, kind.fields, path); },
    orders: function (node, path, kind) { return this.fieldPredicate(node, kind.fields, path); },

    attribute: function (node, path, kind) {
      return [this.textInput(node, "key", path, { placeholder: gettext("attribute, e.g. city"), "aria-label": gettext("attribute") })]
        .concat(this.typedPredicate(node, kind.value_types, path, gettext("compare as")));
    },

    event: function (node, path, kind) {
      var self = this;
      var op = selectBox(this.choiceList(kind.ops), node.op, function (value) { node.op = value; self.changed(true); },
        { class: "loop-rb-event-op", "data-path": path + ".op", "aria-label": gettext("did or did not") });
      var name = this.textInput(node, "name", path, {
        placeholder: gettext("event name (empty: any event)"), "aria-label": gettext("event name"),
        list: this.datalist("events"),
      }, true);
      var where = this.whereList(node, path, function () { return { property: "", value_type: "text", op: "eq" }; },
        function (item, itemPath) {
          return [self.textInput(item, "property", itemPath, {
            placeholder: gettext("property, e.g. products[].category"), "aria-label": gettext("property"),
          })].concat(self.typedPredicate(item, kind.property_value_types, itemPath, gettext("compare as")));
        }, gettext("+ property condition"));
      return [el("div", { class: "loop-rb-line" }, [op, name]), where, this.countLine(node, path, kind), this.whenLine(node, path, kind)];
    },

    coupon: function (node, path, kind) {
      var self = this;
      var state = selectBox(this.choiceList(kind.states), node.state, function (value) { node.state = value; self.changed(false); },
        { class: "loop-rb-state", "data-path": path + ".state", "aria-label": gettext("state") });
      return [state, this.itemWhere(node, path, kind)];
    },

    wishlist: function (node, path, kind) { return [this.itemWhere(node, path, kind)]; },

    reachable: function (node, path, kind) {
      var self = this;
      return [selectBox(this.choiceList(kind.channels), node.channel, function (value) { node.channel = value; self.changed(false); },
        { class: "loop-rb-channel", "data-path": path + ".channel", "aria-label": gettext("channel") })];
    },

    consent: function (node, path, kind) {
      var self = this;
      return [
        selectBox(this.choiceList(kind.purposes), node.purpose, function (value) { node.purpose = value; self.changed(false); },
          { class: "loop-rb-purpose", "data-path": path + ".purpose", "aria-label": gettext("purpose") }),
        selectBox(this.choiceList(kind.states), node.state || "granted", function (value) { node.state = value; self.changed(false); },
          { class: "loop-rb-state", "data-path": path + ".state", "aria-label": gettext("state") }),
      ];
    },

    list: function (node, path) { return [this.includeSelect(node), this.refSelect(node, "list", "lists", path)]; },
    segment: function (node, path) { return [this.includeSelect(node), this.refSelect(node, "segment", "segments", path)]; },

    tag: function (node, path) {
      return [this.includeSelect(node), el("span", { text: gettext("tagged") }), this.textInput(node, "tag", path, {
        list: this.datalist("tags"), placeholder: gettext("tag name"), "aria-label": gettext("tag"),
      })];
    },
  };

  // The id of a <datalist> of the page's choices (tags, event names) that text inputs suggest from; made once.
  RuleBuilder.prototype.datalist = function (collection) {
    var id = "loop-rb-" + collection;
    if (!document.getElementById(id)) {
      document.body.append(el("datalist", { id: id }, (this.choices[collection] || []).map(function (value) {
        return el("option", { value: value });
      })));
    }
    return id;
  };

  RuleBuilder.prototype.itemWhere = function (node, path, kind) {
    var self = this;
    var fields = kind.where_fields;
    return this.whereList(node, path, function () {
      var item = {};
      self.resetPredicate(item, fields[0], fields[0].name);
      return item;
    }, function (item, itemPath) { return self.fieldPredicate(item, fields, itemPath); }, gettext("+ condition on the item"));
  };

  RuleBuilder.prototype.countLine = function (node, path, kind) {
    var self = this;
    var count = node.count || null;
    var choices = [{ value: "", label: gettext("at least once") }].concat(this.choiceList(kind.count_ops));
    var op = selectBox(choices, count ? count.op : "", function (value) {
      setOrDelete(node, "count", value ? { op: value, value: count ? count.value : 1 } : undefined);
      self.changed(true);
    }, { class: "loop-rb-count-op", "data-path": path + ".count.op", "aria-label": gettext("how often") });
    var parts = [el("span", { text: gettext("how often") }), op];
    if (count) {
      var amount = el("input", {
        type: "number", min: "0", step: "1", class: "loop-rb-value", "data-path": path + ".count.value",
        value: count.value === undefined ? "" : count.value, "aria-label": gettext("times"),
      });
      amount.addEventListener("input", function () {
        setOrDelete(count, "value", parseScalar(amount.value, "number"));
        self.changed(false);
      });
      parts.push(amount, el("span", { text: gettext("times") }));
    }
    return el("div", { class: "loop-rb-line" }, parts);
  };

  RuleBuilder.prototype.whenLine = function (node, path, kind) {
    var self = this;
    var spec = kind.when;
    var when = node.when || { op: "ever" };
    var op = selectBox(spec.ops.map(function (name) { return { value: name, label: label(self.schema.ops[name].label) }; }),
      when.op, function (value) {
        if (value === "ever") { delete node.when; }
        else {
          node.when = { op: value };
          self.defaultUnit(node.when, spec);
        }
        self.changed(true);
      }, { class: "loop-rb-when-op", "data-path": path + ".when.op", "aria-label": gettext("when") });
    var parts = [el("span", { text: gettext("when") }), op];
    if (node.when) { parts = parts.concat(this.valueInputs(node.when, spec, path + ".when")); }
    return el("div", { class: "loop-rb-line" }, parts);
  };

  // -- the live preview --

  RuleBuilder.prototype.renderPreviewBox = function () {
    this.countLabel = el("p", { class: "loop-rb-count", "aria-live": "polite" });
    this.problems = el("ul", { class: "loop-rb-problems errorlist" });
    this.sample = el("ul", { class: "loop-rb-sample" });
    return el("div", { class: "loop-rb-preview" }, [
      el("h3", { text: gettext("Who matches now") }), this.countLabel, this.problems, this.sample,
    ]);
  };

  RuleBuilder.prototype.clearTimer = function () {
    if (this.timer) { window.clearTimeout(this.timer); }
    this.timer = null;
  };

  // No preview for what is on the screen now: forget the pending one and any answer still on its way.
  RuleBuilder.prototype.cancelPreview = function () {
    this.clearTimer();
    this.sequence += 1;
    if (this.request) { this.request.abort(); }
    this.request = null;
  };

  RuleBuilder.prototype.schedulePreview = function () {
    this.clearTimer();
    this.preview.classList.add("loop-rb-busy");
    this.timer = window.setTimeout(this.requestPreview.bind(this), DEBOUNCE_MS);
  };

  RuleBuilder.prototype.csrfToken = function () {
    var field = this.textarea.form && this.textarea.form.querySelector("[name=csrfmiddlewaretoken]");
    return field ? field.value : "";
  };

  RuleBuilder.prototype.requestPreview = function () {
    var self = this;
    var sequence = ++this.sequence;
    if (this.request) { this.request.abort(); }
    this.request = new AbortController();
    this.preview.classList.add("loop-rb-busy");
    fetch(this.previewUrl, {
      method: "POST", credentials: "same-origin", signal: this.request.signal,
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": this.csrfToken() },
      body: JSON.stringify({ rules: this.doc, segment: this.segmentId }),
    }).then(function (response) {
      return response.json().then(function (data) { return { status: response.status, data: data }; });
    }).then(function (result) {
      if (sequence !== self.sequence) { return; }
      if (result.status === 200) { self.showMembers(result.data); }
      else if (result.status === 400) { self.showProblems(result.data.errors || []); }
      else { self.showFailure(result.data.message); }
    }).catch(function (error) {
      if (error.name !== "AbortError" && sequence === self.sequence) { self.showFailure(); }
    });
  };

  RuleBuilder.prototype.setCount = function (count, text) {
    this.preview.classList.remove("loop-rb-busy");
    this.countLabel.textContent = text;
    if (count === null) { this.countLabel.removeAttribute("data-count"); }
    else { this.countLabel.setAttribute("data-count", String(count)); }
    this.problems.replaceChildren();
    this.sample.replaceChildren();
    this.clearMarks();
  };

  RuleBuilder.prototype.showMembers = function (data) {
    var text = interpolate(ngettext("%s contact matches", "%s contacts match", data.count), [data.count.toLocaleString()]);
    this.setCount(data.count, text);
    this.sample.replaceChildren.apply(this.sample, data.sample.map(function (member) {
      return el("li", {}, [
        el("a", { href: member.url, text: member.name }),
        member.email ? el("span", { class: "loop-quiet", text: " " + member.email }) : null,
      ]);
    }));
  };

  // The server's reason (counting took too long) or a general one (network, server error).
  RuleBuilder.prototype.showFailure = function (message) {
    this.setCount(null, message ||
      gettext("The members could not be counted just now; they will be when the rules change again."));
  };

  RuleBuilder.prototype.showProblems = function (errors) {
    var self = this;
    this.setCount(null, gettext("The rules are not complete yet:"));
    errors.forEach(function (error) {
      var node = self.nodeFor(error.path);
      self.markInput(error.path);
      if (node) { node.querySelector(":scope > .loop-rb-errors").append(el("li", { text: error.message })); }
      self.problems.append(el("li", { text: self.conditionName(node, error.path) + ": " + error.message }));
    });
  };

  RuleBuilder.prototype.nodeFor = function (path) {
    var best = null;
    this.tree.querySelectorAll(".loop-rb-node[data-path]").forEach(function (node) {
      var own = node.dataset.path;
      var inside = path === own || path.indexOf(own + ".") === 0 || path.indexOf(own + "[") === 0;
      if (inside && (!best || own.length > best.dataset.path.length)) { best = node; }
    });
    return best || this.tree.querySelector(".loop-rb-node");
  };

  RuleBuilder.prototype.markInput = function (path) {
    this.tree.querySelectorAll("[data-path]:not(.loop-rb-node)").forEach(function (input) {
      var own = input.dataset.path;
      if (path === own || path.indexOf(own + "[") === 0 || own.indexOf(path + "[") === 0 || own.indexOf(path + ".") === 0) {
        input.classList.add("loop-rb-invalid");
      }
    });
  };

  RuleBuilder.prototype.clearMarks = function () {
    this.tree.querySelectorAll(".loop-rb-invalid").forEach(function (input) { input.classList.remove("loop-rb-invalid"); });
    this.tree.querySelectorAll(".loop-rb-errors").forEach(function (list) { list.replaceChildren(); });
  };

  // "behaviour (root.children[1])": the condition's name and where it is, so a message is never anonymous.
  RuleBuilder.prototype.conditionName = function (node, path) {
    if (!node) { return path || gettext("rules"); }
    var kind = node.querySelector(":scope > .loop-rb-head > .loop-rb-kind");
    var name = kind ? kind.textContent : gettext("condition");
    if (node.classList.contains("loop-rb-group")) { name = label(this.schema.kinds.group.label); }
    return name + " (" + (path || node.dataset.path) + ")";
  };

  // --- Start ---------------------------------------------------------------------------------------------------

  function start(container) {
    var textarea = document.getElementById(container.dataset.textarea);
    var choices = JSON.parse(document.getElementById(container.dataset.choices).textContent);
    fetch(container.dataset.schemaUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("schema " + response.status); }
        return response.json();
      })
      .then(function (schema) { new RuleBuilder(container, textarea, schema, choices).start(); })
      .catch(function () { textarea.hidden = false; });  // without the schema the JSON stays editable
  }

  function startAll() {
    document.querySelectorAll(".loop-rule-builder").forEach(start);
  }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", startAll); }
  else { startAll(); }
})();

"""DRF serializers; validation errors are the demo's invalid-payload (400) path."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from rest_framework import serializers

from .models import Cart, CartItem, Category, Order, OrderItem, Product


class LoginSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=128, write_only=True, trim_whitespace=False)


class UserSerializer(serializers.ModelSerializer):
    class Meta:
        model = get_user_model()
        fields = ["id", "username", "email", "first_name", "last_name"]


class CategorySerializer(serializers.ModelSerializer):
    class Meta:
        model = Category
        fields = ["id", "name", "slug"]


class ProductSerializer(serializers.ModelSerializer):
    # Reading product.category per row is what turns a missing select_related() into an N+1.
    category = CategorySerializer(read_only=True)

    class Meta:
        model = Product
        fields = ["id", "name", "slug", "description", "price", "stock", "category"]


class CartItemSerializer(serializers.ModelSerializer):
    product = ProductSerializer(read_only=True)
    line_total = serializers.SerializerMethodField()

    class Meta:
        model = CartItem
        fields = ["id", "product", "quantity", "line_total"]

    def get_line_total(self, item: CartItem) -> str:
        return str(item.product.price * item.quantity)


class CartSerializer(serializers.ModelSerializer):
    items = CartItemSerializer(many=True, read_only=True)
    total = serializers.SerializerMethodField()

    class Meta:
        model = Cart
        fields = ["id", "items", "total", "updated_at"]

    def get_total(self, cart: Cart) -> str:
        return str(cart.total())


class AddToCartSerializer(serializers.Serializer):
    product = serializers.PrimaryKeyRelatedField(queryset=Product.objects.filter(is_active=True))
    quantity = serializers.IntegerField(min_value=1, max_value=20)

    def validate(self, attrs: dict) -> dict:
        if attrs["quantity"] > attrs["product"].stock:
            raise serializers.ValidationError({"quantity": "not enough stock"})
        return attrs


class CheckoutSerializer(serializers.Serializer):
    shipping_address = serializers.CharField(min_length=5, max_length=190)
    payment_method = serializers.ChoiceField(choices=["card", "paypal", "invoice"])


class OrderItemSerializer(serializers.ModelSerializer):
    product = serializers.CharField(source="product.name", read_only=True)

    class Meta:
        model = OrderItem
        fields = ["product", "quantity", "unit_price"]


class OrderSerializer(serializers.ModelSerializer):
    items = OrderItemSerializer(many=True, read_only=True)

    class Meta:
        model = Order
        fields = ["id", "status", "total", "shipping_cost", "shipping_address", "correlation_id", "created_at",
                  "items"]
